// dcbd: one node (runtime/node.hpp). The environment names the database, the
// addresses and the node; everything else comes from CAF's config file
// (caf-application.ini) and command line, group "dcbd" (`dcbd --long-help`
// lists them with their defaults).
#include "runtime/node.hpp"

int main(int argc, char** argv) {
  return dcbd::run_node(argc, argv);
}
