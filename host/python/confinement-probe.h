// Which of the sandbox's walls this machine can put up, asked once when the node starts: the
// node says which are missing (log and `sandpipe status`) and sandboxes run with the rest.
#pragma once

#include <string>
#include <vector>

namespace sandpipe::host {

struct ConfinementLayers {
  std::vector<std::string> in_force;  ///< "seccomp", "namespaces", "landlock"
  std::vector<std::string> missing;   ///< "landlock: not in this kernel" ...
};

/// [main] Asks the kernel (a short-lived child tries the namespaces; Landlock reports its ABI).
/// Honours SANDPIPE_CONFINE_NO_NAMESPACES / SANDPIPE_CONFINE_NO_LANDLOCK as the sandbox does,
/// and SANDPIPE_CONFINE_NO_PID_NAMESPACE as the host's spawn does.
[[nodiscard]] ConfinementLayers probe_confinement();

/// [any] The layers as the status JSON's "confinement" object.
[[nodiscard]] std::string confinement_json(const ConfinementLayers& layers);

}  // namespace sandpipe::host
