// A misbehaving stand-in for sandpipe-sandbox, to test how the host treats an untrusted peer.
// Mode from SANDPIPE_FAKE_SANDBOX_MODE: version | garbage | bad-info | silent | crash | wrong-seq | ok
#include <sys/prctl.h>
#include <unistd.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/io.h>

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <variant>

#include "schemas/control.capnp.h"
#include "shm/block-channel.h"
#include "shm/segment.h"

namespace {

using sandpipe::schema::HostMessage;
using sandpipe::schema::SandboxMessage;

void send(int fd, capnp::MessageBuilder& msg) { capnp::writeMessageToFd(fd, msg); }

}  // namespace

int main(int argc, char** argv) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  int control = -1;
  int shm_fd = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--control-fd") == 0) control = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--shm-fd") == 0) shm_fd = std::atoi(argv[i + 1]);
  }
  const char* env = std::getenv("SANDPIPE_FAKE_SANDBOX_MODE");
  const std::string mode = env != nullptr ? env : "ok";
  auto attached = sandpipe::shm::Segment::attach(shm_fd);
  if (std::holds_alternative<std::string>(attached)) return 10;
  auto& segment = std::get<sandpipe::shm::Segment>(attached);
  sandpipe::shm::SandboxEndpoint endpoint(segment);

  if (mode == "crash") std::abort();
  if (mode == "silent") {
    for (;;) ::pause();
  }
  kj::FdInputStream input(control);
  std::uint32_t hello_id = 0;
  {
    capnp::InputStreamMessageReader hello_in(input);
    hello_id = hello_in.getRoot<HostMessage>().getRequestId();
  }
  if (mode == "garbage") {
    // One segment of 2^31 words: a frame no host may accept.
    const unsigned char frame[8] = {0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f};
    (void)!::write(control, frame, sizeof frame);
    for (;;) ::pause();
  }
  {
    capnp::MallocMessageBuilder msg;
    auto root = msg.initRoot<SandboxMessage>();
    root.setRequestId(hello_id);
    auto hello = root.initHello();
    hello.setProtocolVersion(mode == "version" ? 99 : sandpipe::schema::PROTOCOL_VERSION);
    hello.setShmLayoutVersion(sandpipe::shm::layout_version);
    hello.setShmHeaderSize(sandpipe::shm::Segment::header_size());
    hello.setPid(static_cast<int>(::getpid()));
    send(control, msg);
  }
  std::uint32_t load_id = 0;
  for (;;) {  // a spare's preload comes before its load: no answer
    capnp::InputStreamMessageReader load_in(input);
    load_id = load_in.getRoot<HostMessage>().getRequestId();
    if (load_in.getRoot<HostMessage>().which() != HostMessage::PRELOAD) break;
  }
  {
    capnp::MallocMessageBuilder msg;
    auto root = msg.initRoot<SandboxMessage>();
    root.setRequestId(load_id);
    auto loaded = root.initLoaded();
    loaded.setName("Fake");
    if (mode == "bad-info") {
      auto p = loaded.initParams(1)[0];
      p.setKey("level");
      p.setKind(sandpipe::schema::ParamInfo::Kind::NUMBER);
      p.setMinValue(0.0);
      p.setMaxValue(1.0);
      p.initDefault().setNumber(10.0);
    }
    send(control, msg);
  }
  for (;;) {
    sandpipe::shm::Job job;
    switch (endpoint.wait(job, 1'000'000'000)) {
      case sandpipe::shm::SandboxEndpoint::Wake::job: {
        sandpipe::shm::Completion done{job.seq, job.slot, job.frames, 0};
        if (mode == "wrong-seq") done.seq += 7;
        endpoint.complete(done);
        break;
      }
      case sandpipe::shm::SandboxEndpoint::Wake::control: {
        capnp::InputStreamMessageReader in(input);
        if (in.getRoot<HostMessage>().which() == HostMessage::SHUTDOWN) return 0;
        break;
      }
      case sandpipe::shm::SandboxEndpoint::Wake::timeout:
        break;
    }
  }
}
