#include "host/python/confinement-probe.h"

#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <nlohmann/json.hpp>

namespace sandpipe::host {
namespace {

/// The namespaces a sandbox enters (sandbox/confinement.cpp) and the PID namespace the host
/// starts it in (pid-namespace-spawn.h), tried in a throw-away child.
std::string namespaces_problem() {
  const pid_t pid = ::fork();
  if (pid < 0) return std::string("cannot probe: fork: ") + std::strerror(errno);
  if (pid == 0) {
    constexpr int flags =
        CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID;
    ::_exit(::unshare(flags) == 0 ? 0 : (errno & 0x7f) + 1);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  const int err = WIFEXITED(status) ? WEXITSTATUS(status) - 1 : EPERM;
  return std::string("user namespaces refused by this kernel (") + std::strerror(err) + ")";
}

}  // namespace

ConfinementLayers probe_confinement() {
  ConfinementLayers layers;
#if SANDPIPE_HAVE_SECCOMP
  layers.in_force.emplace_back("seccomp");
#else
  layers.missing.emplace_back("seccomp: sandpipe-sandbox was built without libseccomp");
#endif
  if (std::getenv("SANDPIPE_CONFINE_NO_NAMESPACES") != nullptr) {
    layers.missing.emplace_back("namespaces: turned off (SANDPIPE_CONFINE_NO_NAMESPACES)");
  } else if (const std::string problem = namespaces_problem(); !problem.empty()) {
    layers.missing.push_back("namespaces: " + problem);
  } else {
    layers.in_force.emplace_back("namespaces");
    if (std::getenv("SANDPIPE_CONFINE_NO_PID_NAMESPACE") != nullptr)
      layers.missing.emplace_back("pid namespace: turned off (SANDPIPE_CONFINE_NO_PID_NAMESPACE)");
  }
  if (std::getenv("SANDPIPE_CONFINE_NO_LANDLOCK") != nullptr) {
    layers.missing.emplace_back("landlock: turned off (SANDPIPE_CONFINE_NO_LANDLOCK)");
  } else if (const long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, 1U); abi < 1) {
    layers.missing.emplace_back(std::string("landlock: not available (") + std::strerror(errno) + ")");
  } else {
    layers.in_force.push_back("landlock");
  }
  return layers;
}

std::string confinement_json(const ConfinementLayers& layers) {
  const nlohmann::ordered_json j = {{"layers", layers.in_force}, {"missing", layers.missing}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace sandpipe::host
