// Internal to actors/: the boundary between the store's exceptions and CAF
// errors. Nothing escapes a handler: what it throws becomes an error reply,
// and what escapes anyway becomes the actor's exit reason, not a crash.
#pragma once

#include "actors/inspect.hpp"
#include "store/error.hpp"

#include <caf/error.hpp>

#include <exception>
#include <string>

namespace dcbd::detail {

/// Maps the exception being handled to a CAF error; call inside `catch`.
inline caf::error error_from_current_exception() {
  try {
    throw;
  } catch (const store_error& e) {
    return to_error(e);
  } catch (const std::exception& e) {
    return caf::make_error(errc::internal, std::string{e.what()});
  } catch (...) {
    return caf::make_error(errc::internal, "unknown exception");
  }
}

/// Turns an exception that escaped a handler anyway into the actor's exit
/// reason instead of a crash of the process.
template <class Self>
void install_exception_handler(Self* self) {
  self->set_exception_handler([](std::exception_ptr& eptr) -> caf::error {
    try {
      std::rethrow_exception(eptr);
    } catch (...) {
      return error_from_current_exception();
    }
  });
}

} // namespace dcbd::detail
