# The control channel between the host and one sandbox process.
#
# Framing: standard Cap'n Proto stream framing over a Unix socketpair (SOCK_STREAM), one message
# per frame, both ends through schemas/control-channel.h (which also holds the limits). The host sends HostMessage, the sandbox answers with SandboxMessage. Audio never
# travels here: it goes through the shared-memory block channel (shm/block-channel.h).
# The sandbox is untrusted: the host reads its messages with tight ReaderOptions (size and
# traversal limits) and validates every field before use.
#
# Conversation:
#   host: hello            -> sandbox: hello        (versions and shm layout size must match)
#   host: preload          (optional, before load; no answer: a spare imports its plugin ahead)
#   host: load             -> sandbox: loaded | error
#   host: setParam         -> sandbox: paramSet | error
#   host: getState         -> sandbox: state | error
#   host: getStats         -> sandbox: stats
#   host: shutdown         -> sandbox exits 0
#   sandbox: log           (any time; the plugin's stdout/stderr and warnings)
#   sandbox: error         (any time; e.g. an exception in process(), with traceback)
@0xdf0845010229822e;

$import "/capnp/c++.capnp".namespace("sandpipe::schema");

# 2: preload (a sandbox of version 1 would take it for a bad load)
# 3: load.inspect (a sandbox of version 2 would start a plugin it was only asked to describe)
# 4: requestId in both directions: replies are matched to requests by id, not by order
# 5: setRate / rateSet (a rate change keeps the sandbox; version 4 would call it a bad message)
# 6: sandbox groups: load.members, ParamSetting.member, PluginInfo.members, per-member stats
#    and errors (a version-5 sandbox would load only the first member)
const protocolVersion :UInt32 = 6;

struct ParamValue {
  union {
    number @0 :Float64;
    text @1 :Text;
    boolean @2 :Bool;
  }
}

struct ParamSetting {
  key @0 :Text;
  value @1 :ParamValue;
  member @2 :UInt32;                  # a sandbox group: the member it is for (0 otherwise)
}

# One plugin of a sandbox group (issue 17): several plugins in one sandbox process, called in
# chain order on the one shared block.
struct GroupMember {
  name @0 :Text;                      # the chain's name for it (log lines, errors)
  path @1 :Text;                      # absolute path of its .py file
  params @2 :List(ParamSetting);      # from the config (member fields ignored)
  onFailure @3 :MemberFailure;        # what its part of the block becomes when it raises
  enum MemberFailure {
    auto @0;                          # mute for an earlier-API processor, else bypass
    bypass @1;                        # the block as the member before left it
    mute @2;                          # silence
  }
}

struct ParamInfo {
  key @0 :Text;
  label @1 :Text;
  unit @2 :Text;
  kind @3 :Kind;
  enum Kind {
    number @0;
    integer @1;
    boolean @2;
    choice @3;
    text @4;
  }
  minValue @4 :Float64;
  maxValue @5 :Float64;
  default @6 :ParamValue;
  choices @7 :List(Text);
}

enum PluginApi {
  sdk @0;      # a subclass of sandpipe.Plugin (plugins-py/sandpipe)
  legacy @1;   # the earlier pipeline's create_plugin() / AudioProcessorPlugin API
  group @2;    # a sandbox group: its members are in PluginInfo.members
}

enum PluginRole {
  processor @0;
  source @1;
  sink @2;
}

struct PluginInfo {
  name @0 :Text;
  version @1 :Text;
  description @2 :Text;
  api @3 :PluginApi;
  role @4 :PluginRole;
  params @5 :List(ParamInfo);
  latencyFrames @6 :UInt32;
  preloaded @7 :Bool;                 # the module was imported by preload, the load reused it
  members @8 :List(PluginInfo);       # a group: one per member, in order (latencyFrames above
                                      # is their sum; params above is empty)
}

struct HostMessage {
  requestId @16 :UInt32;              # echoed in the answer (0: none expected)
  union {
    hello :group {
      protocolVersion @0 :UInt32;
      shmLayoutVersion @1 :UInt32;
      shmHeaderSize @2 :UInt32;       # sizeof the segment header as the host knows it
    }
    load :group {
      path @3 :Text;                  # absolute path of the .py file
      instanceName @4 :Text;          # the chain's name for this slot, prefixes its log lines
      sampleRate @5 :Float64;
      channels @6 :UInt32;
      maxFrames @7 :UInt32;
      params @8 :List(ParamSetting);  # from the config, applied before the first block
      state @9 :Data;                 # from a previous instance's getState (restart), may be empty
                                      # (a group: the group's getState, every member's in one)
      members @18 :List(GroupMember); # non-empty: a sandbox group (then path and params above
                                      # are ignored, instanceName names the group)
      inspect @15 :Bool;              # only construct the plugin and describe it (`sandpipe
                                      # inspect`): no prepare/initialize/start, no block follows
    }
    setParam @10 :ParamSetting;
    getState @11 :Void;
    getStats @12 :Void;
    shutdown @13 :Void;
    preload @14 :Text;                # absolute path of the .py file a later load will name
    setRate @17 :Float64;             # the graph's rate changed: prepare the plugin for it
                                      # (between two blocks), keeping its params and state
  }
}

struct SandboxMessage {
  requestId @24 :UInt32;              # the request this answers (0: a log, an error in process())
  union {
    hello :group {
      protocolVersion @0 :UInt32;
      shmLayoutVersion @1 :UInt32;
      shmHeaderSize @2 :UInt32;
      pid @3 :Int32;
      pythonVersion @4 :Text;
      numpyVersion @5 :Text;
    }
    loaded @6 :PluginInfo;
    paramSet :group {
      key @7 :Text;
      member @26 :UInt32;             # a group: the member whose parameter it was
      latencyFrames @8 :UInt32;       # a parameter may change the plugin's latency
      readBack @23 :ParamValue;       # what an earlier-API plugin's get_parameter(key) answers
                                      # after the change (unset: nothing); the node publishes it
    }
    state @9 :Data;
    stats :group {
      blocks @10 :UInt64;
      exceptions @11 :UInt64;
      processNsLast @12 :UInt64;
      processNsMax @13 :UInt64;
      processNsTotal @14 :UInt64;
      logsDropped @21 :UInt64;        # log lines dropped because the host did not read them
      gcCollections @22 :UInt64;      # garbage collections run while idle
      memberExceptions @27 :List(UInt64);  # a group: exceptions raised by each member
      memberProcessNs @28 :List(UInt64);   # a group: time spent in each member's process()
    }
    log :group {
      level @15 :LogLevel;
      text @16 :Text;                 # one line, no trailing newline
      stream @20 :LogStream;          # where the line was written
    }
    rateSet @25 :UInt32;              # setRate done: the plugin's latency (frames) at the new rate
    error :group {
      phase @17 :Phase;
      message @18 :Text;
      traceback @19 :Text;
      member @29 :Int32 = -1;         # a group: the member that raised (-1: none, or the group)
    }
  }
  enum LogLevel {
    debug @0;
    info @1;
    warning @2;
    error @3;
  }
  enum LogStream {
    sandbox @0;                       # the sandbox itself
    stdout @1;                        # the plugin's sys.stdout
    stderr @2;                        # the plugin's sys.stderr (warnings, logging)
  }
  enum Phase {
    handshake @0;
    load @1;
    setParam @2;
    state @3;
    process @4;
    setRate @5;
  }
}
