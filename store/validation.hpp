// Validation and normalization of store input (DESIGN §2 limits).
#pragma once

#include "store/model.hpp"

#include <string_view>
#include <vector>

namespace dcbd {

/// Sorts and de-duplicates the tags of `e`.
void normalize(event& e);

/// Sorts and de-duplicates the types and tags of every item of `q`.
void normalize(query& q);

/// Validates and normalizes `e`. Throws `store_error(invalid_argument)`
/// naming the offending field, prefixed with `field` (e.g. "events[2]").
void validate(event& e, const limits& lim, std::string_view field);

/// Validates and normalizes `q`. Throws like `validate(event&, ...)`.
void validate(query& q, const limits& lim, std::string_view field);

/// Validates and normalizes a whole append request.
void validate(append_request& req, const limits& lim);

/// Validates read options (e.g. `from` must fit a signed 64-bit position).
void validate(const read_options& options, std::string_view field);

/// Validates the input of a read: returns a normalized copy of `q` (fields
/// "query..."), and checks `options` (fields "options...").
query validate_read(const query& q, const read_options& options,
                    const limits& lim);

/// Returns whether `s` is well-formed UTF-8.
bool is_utf8(std::string_view s) noexcept;

} // namespace dcbd
