#include "runtime/command_registry.hpp"

#include <cctype>
#include <stdexcept>

namespace dcbd {

namespace {

bool good_name(std::string_view name) {
  if (name.empty() || name.size() > 100)
    return false;
  for (unsigned char c : name)
    if (!std::isalnum(c) && c != '_' && c != '-' && c != '.')
      return false;
  return true;
}

} // namespace

void command_registry::add(std::string name, command_factory make,
                           std::string description) {
  if (!good_name(name))
    throw std::invalid_argument("command name '" + name
                                + "': use 1-100 letters, digits, '_', '-' "
                                  "or '.'");
  if (!make)
    throw std::invalid_argument("command '" + name + "': no factory");
  auto entry = std::make_shared<const command_entry>(
    command_entry{name, std::move(description), std::move(make)});
  std::lock_guard guard{mtx_};
  if (entries_.count(name) > 0)
    throw std::invalid_argument("command '" + name + "' is registered already");
  entries_.emplace(std::move(name), std::move(entry));
}

std::shared_ptr<const command_entry>
command_registry::find(std::string_view name) const {
  std::lock_guard guard{mtx_};
  auto i = entries_.find(name);
  return i == entries_.end() ? nullptr : i->second;
}

std::vector<std::shared_ptr<const command_entry>>
command_registry::list() const {
  std::lock_guard guard{mtx_};
  std::vector<std::shared_ptr<const command_entry>> out;
  out.reserve(entries_.size());
  for (auto& [name, entry] : entries_)
    out.push_back(entry);
  return out;
}

} // namespace dcbd
