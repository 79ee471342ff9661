// NOTE: the only translation unit that uses the numpy C API (import_array lives here).
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include "sandbox/python-plugin.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace sandpipe::sandbox {
namespace {

/// An owned reference (RAII over Py_XDECREF). The GIL must be held wherever one dies.
class Ref {
 public:
  Ref() noexcept = default;
  explicit Ref(PyObject* owned) noexcept : p_(owned) {}
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
  Ref(Ref&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  Ref& operator=(Ref&& o) noexcept {
    if (this != &o) {
      Py_XDECREF(p_);
      p_ = o.p_;
      o.p_ = nullptr;
    }
    return *this;
  }
  ~Ref() { Py_XDECREF(p_); }
  [[nodiscard]] PyObject* get() const noexcept { return p_; }
  /// Gives the reference up (to a function that steals it, or returns it).
  [[nodiscard]] PyObject* release() noexcept { return std::exchange(p_, nullptr); }
  explicit operator bool() const noexcept { return p_ != nullptr; }

 private:
  PyObject* p_ = nullptr;
};

std::string utf8(PyObject* obj) {
  if (obj == nullptr) return {};
  Ref text(PyObject_Str(obj));
  if (!text) {
    PyErr_Clear();
    return "<unprintable>";
  }
  Ref bytes(PyUnicode_AsEncodedString(text.get(), "utf-8", "replace"));
  if (!bytes) {
    PyErr_Clear();
    return "<unprintable>";
  }
  return {PyBytes_AS_STRING(bytes.get()), static_cast<std::size_t>(PyBytes_GET_SIZE(bytes.get()))};
}

/// Takes the pending exception. Before the glue is imported there is no nice formatter: the
/// traceback module does it. `group`: the glue's errors about a group's member carry its index
/// as `member`.
PythonError take_exception(PyObject* formatter, bool group = false) {
  PyObject* type = nullptr;
  PyObject* value = nullptr;
  PyObject* tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  if (type == nullptr) return {"unknown error (no Python exception set)", {}};
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb != nullptr && value != nullptr) PyException_SetTraceback(value, tb);
  Ref t(type), v(value), b(tb);
  PythonError error;
  if (group && v && PyObject_HasAttrString(v.get(), "member") != 0) {
    Ref member(PyObject_GetAttrString(v.get(), "member"));
    const long index = member && PyLong_Check(member.get()) ? PyLong_AsLong(member.get()) : -1;
    if (index >= 0 && index < 1'000'000) error.member = static_cast<std::int32_t>(index);
    PyErr_Clear();
  }
  if (formatter != nullptr && v) {
    Ref result(PyObject_CallOneArg(formatter, v.get()));
    if (result && PyTuple_Check(result.get()) && PyTuple_GET_SIZE(result.get()) == 2) {
      error.message = utf8(PyTuple_GET_ITEM(result.get(), 0));
      error.traceback = utf8(PyTuple_GET_ITEM(result.get(), 1));
      return error;
    }
    PyErr_Clear();
  }
  error.message = utf8(PyObject_GetAttrString(t.get(), "__name__")) + ": " + utf8(v.get());
  PyErr_Clear();
  Ref tb_module(PyImport_ImportModule("traceback"));
  if (tb_module) {
    Ref lines(PyObject_CallMethod(tb_module.get(), "format_exception", "OOO", t.get(),
                                  v ? v.get() : Py_None, b ? b.get() : Py_None));
    if (lines) {
      Ref empty(PyUnicode_FromString(""));
      Ref joined(PyUnicode_Join(empty.get(), lines.get()));
      error.traceback = utf8(joined.get());
    }
  }
  PyErr_Clear();
  return error;
}

PyObject* to_python(const ParamValue& value) {
  if (const auto* d = std::get_if<double>(&value)) return PyFloat_FromDouble(*d);
  if (const auto* b = std::get_if<bool>(&value)) return PyBool_FromLong(*b ? 1 : 0);
  const auto& s = std::get<std::string>(value);
  return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
}

std::optional<ParamValue> from_python(PyObject* obj) {
  if (PyBool_Check(obj)) return ParamValue{obj == Py_True};
  if (PyFloat_Check(obj) || PyLong_Check(obj)) {
    const double d = PyFloat_AsDouble(obj);
    if (PyErr_Occurred()) {
      PyErr_Clear();
      return std::nullopt;
    }
    return ParamValue{d};
  }
  if (PyUnicode_Check(obj)) return ParamValue{utf8(obj)};
  return std::nullopt;
}

std::string dict_text(PyObject* dict, const char* key) {
  PyObject* item = PyDict_GetItemString(dict, key);  // borrowed
  return item != nullptr ? utf8(item) : std::string{};
}

double dict_number(PyObject* dict, const char* key, double fallback) {
  PyObject* item = PyDict_GetItemString(dict, key);
  if (item == nullptr) return fallback;
  const double d = PyFloat_AsDouble(item);
  if (PyErr_Occurred()) {
    PyErr_Clear();
    return fallback;
  }
  return d;
}

/// `[(key, value), ...]` for the glue; null with the exception set.
PyObject* param_list(const std::vector<std::pair<std::string, ParamValue>>& params) {
  Ref list(PyList_New(static_cast<Py_ssize_t>(params.size())));
  if (!list) return nullptr;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& [key, value] = params[i];
    PyObject* item =
        Py_BuildValue("(s#N)", key.data(), static_cast<Py_ssize_t>(key.size()), to_python(value));
    if (item == nullptr) return nullptr;
    PyList_SET_ITEM(list.get(), static_cast<Py_ssize_t>(i), item);
  }
  return list.release();
}

/// `[(name, path, params, on_failure), ...]` for the glue's load_group; null with the exception set.
PyObject* member_list(const std::vector<GroupMember>& members) {
  Ref list(PyList_New(static_cast<Py_ssize_t>(members.size())));
  if (!list) return nullptr;
  for (std::size_t i = 0; i < members.size(); ++i) {
    const GroupMember& m = members[i];
    const char* failure = m.on_failure == MemberFailure::bypass ? "bypass"
                          : m.on_failure == MemberFailure::mute ? "mute"
                                                                : "auto";
    Ref path(PyUnicode_DecodeFSDefault(m.path.c_str()));
    Ref params(param_list(m.params));
    PyObject* item = path && params
                         ? Py_BuildValue("(s#OOs)", m.name.data(), static_cast<Py_ssize_t>(m.name.size()),
                                         path.get(), params.get(), failure)
                         : nullptr;
    if (item == nullptr) return nullptr;
    PyList_SET_ITEM(list.get(), static_cast<Py_ssize_t>(i), item);
  }
  return list.release();
}

/// session.info()'s dict (a group's: its members' too) into `out`.
void describe(PyObject* info, PluginDescription& out) {
  out.api = dict_text(info, "api");
  out.name = dict_text(info, "name");
  out.version = dict_text(info, "version");
  out.description = dict_text(info, "description");
  out.role = dict_text(info, "role");
  out.latency = static_cast<std::uint32_t>(dict_number(info, "latency", 0.0));
  PyObject* plist = PyDict_GetItemString(info, "params");
  if (plist != nullptr && PyList_Check(plist)) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(plist); ++i) {
      PyObject* p = PyList_GET_ITEM(plist, i);
      if (!PyDict_Check(p)) continue;
      ParamSpec spec;
      spec.key = dict_text(p, "key");
      spec.label = dict_text(p, "label");
      spec.unit = dict_text(p, "unit");
      spec.kind = dict_text(p, "kind");
      spec.min = dict_number(p, "min", -std::numeric_limits<double>::infinity());
      spec.max = dict_number(p, "max", std::numeric_limits<double>::infinity());
      PyObject* def = PyDict_GetItemString(p, "default");
      spec.default_value = def != nullptr ? from_python(def).value_or(ParamValue{std::string{}}) : ParamValue{0.0};
      PyObject* choices = PyDict_GetItemString(p, "choices");
      if (choices != nullptr && PyList_Check(choices)) {
        for (Py_ssize_t c = 0; c < PyList_GET_SIZE(choices); ++c) spec.choices.push_back(utf8(PyList_GET_ITEM(choices, c)));
      }
      out.params.push_back(std::move(spec));
    }
  }
  PyObject* members = PyDict_GetItemString(info, "members");
  if (members != nullptr && PyList_Check(members)) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(members); ++i) {
      PyObject* m = PyList_GET_ITEM(members, i);
      if (PyDict_Check(m)) describe(m, out.members.emplace_back());
    }
  }
}

/// `log(stream, text)` handed to the glue; `self` is a capsule holding the LogFn.
PyObject* log_trampoline(PyObject* self, PyObject* args) {
  int stream = 0;
  PyObject* text = nullptr;
  if (PyArg_ParseTuple(args, "iU", &stream, &text) == 0) return nullptr;
  auto* fn = static_cast<PythonPlugin::LogFn*>(PyCapsule_GetPointer(self, "sandpipe.log"));
  if (fn == nullptr) return nullptr;
  Ref bytes(PyUnicode_AsEncodedString(text, "utf-8", "replace"));
  if (!bytes) return nullptr;
  (*fn)(stream, std::string_view(PyBytes_AS_STRING(bytes.get()),
                                 static_cast<std::size_t>(PyBytes_GET_SIZE(bytes.get()))));
  Py_RETURN_NONE;
}

PyMethodDef log_def = {"log", log_trampoline, METH_VARARGS, "Sends one line of plugin output to the host."};

/// numpy's import_array() is a macro that returns from the calling function.
int import_numpy() {
  if (_import_array() < 0) return -1;
  return 0;
}

}  // namespace

struct PythonPlugin::Impl {
  LogFn log;
  Ref glue;          // sandpipe._sandbox
  Ref format_error;  // glue.format_error
  Ref session;
  Ref process;       // session.process (the plugin's bound method for the SDK)
  Ref accept;        // session.accept
  std::size_t members = 0;  // a group's (0: a single plugin)
  Ref gc_collect, gc_get_count;
  std::vector<PyObject*> views;  // [slot * max_frames + frames - 1], owned
  std::vector<float*> slot_base;
  std::uint32_t channels = 0;
  std::uint32_t max_frames = 0;
  std::size_t channel_stride = 0;
  std::uint32_t blocks_since_check = 0;

  PyObject* view(std::uint32_t slot, std::uint32_t frames) {
    PyObject*& cached = views[std::size_t{slot} * max_frames + frames - 1];
    if (cached == nullptr) {
      npy_intp dims[2] = {static_cast<npy_intp>(channels), static_cast<npy_intp>(frames)};
      npy_intp strides[2] = {static_cast<npy_intp>(channel_stride * sizeof(float)),
                             static_cast<npy_intp>(sizeof(float))};
      cached = PyArray_New(&PyArray_Type, 2, dims, NPY_FLOAT32, strides, slot_base[slot], 0,
                           NPY_ARRAY_WRITEABLE | NPY_ARRAY_ALIGNED, nullptr);
    }
    return cached;
  }

  void drop_views() {
    for (PyObject*& v : views) {
      Py_XDECREF(v);
      v = nullptr;
    }
  }
};

PythonPlugin::PythonPlugin(const std::filesystem::path& program, const std::filesystem::path& sdk_dir,
                           LogFn log)
    : impl_(std::make_unique<Impl>()) {
  if (Py_IsInitialized() != 0) throw std::logic_error("PythonPlugin: one interpreter per process");
  impl_->log = std::move(log);

  PyConfig config;
  PyConfig_InitIsolatedConfig(&config);
  config.write_bytecode = 0;  // never write __pycache__ next to a plugin (or into the source tree)
  config.user_site_directory = 0;
  config.site_import = 1;  // Debian's site adds dist-packages (numpy, scipy)
  PyStatus status = PyConfig_SetBytesString(&config, &config.program_name, program.c_str());
  if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status)) {
    throw std::runtime_error(std::string("cannot initialise Python: ") +
                             (status.err_msg != nullptr ? status.err_msg : "unknown error"));
  }

  auto fail = [&](const std::string& what) {
    PythonError e = take_exception(impl_->format_error.get());
    throw std::runtime_error(what + ": " + e.message + (e.traceback.empty() ? "" : "\n") +
                             e.traceback);
  };

  PyObject* sys_path = PySys_GetObject("path");  // borrowed
  Ref dir(PyUnicode_DecodeFSDefault(sdk_dir.c_str()));
  if (sys_path == nullptr || !dir || PyList_Insert(sys_path, 0, dir.get()) < 0) fail("cannot set sys.path");

  if (import_numpy() < 0) fail("cannot import numpy");
  impl_->glue = Ref(PyImport_ImportModule("sandpipe._sandbox"));
  if (!impl_->glue) fail("cannot import the sandpipe SDK from " + sdk_dir.string());
  impl_->format_error = Ref(PyObject_GetAttrString(impl_->glue.get(), "format_error"));
  Ref gc(PyImport_ImportModule("gc"));
  if (!impl_->format_error || !gc) fail("sandpipe SDK incomplete");
  impl_->gc_collect = Ref(PyObject_GetAttrString(gc.get(), "collect"));
  impl_->gc_get_count = Ref(PyObject_GetAttrString(gc.get(), "get_count"));

  Ref capsule(PyCapsule_New(&impl_->log, "sandpipe.log", nullptr));
  Ref log_fn(capsule ? PyCFunction_New(&log_def, capsule.get()) : nullptr);
  Ref installed(log_fn ? PyObject_CallMethod(impl_->glue.get(), "install_stdio", "O", log_fn.get()) : nullptr);
  if (!installed) fail("cannot redirect the plugin's output");
}

PythonPlugin::~PythonPlugin() {
  // NOTE: the interpreter is never finalised: a plugin's threads could make Py_FinalizeEx hang,
  // and the process exits right after. Only drop what points into the shared segment.
  if (impl_ && Py_IsInitialized() != 0) impl_->drop_views();
}

void PythonPlugin::set_log(LogFn log) { impl_->log = std::move(log); }

void PythonPlugin::before_fork() noexcept { PyOS_BeforeFork(); }

void PythonPlugin::after_fork_parent() noexcept { PyOS_AfterFork_Parent(); }

void PythonPlugin::after_fork_child() noexcept {
  PyOS_AfterFork_Child();
  // numpy seeds its global RandomState once, at import: every child of a zygote would draw the
  // same "random" numbers. Fresh entropy, as a freshly started interpreter has.
  Ref random(PyImport_ImportModule("numpy.random"));
  Ref seeded(random ? PyObject_CallMethod(random.get(), "seed", nullptr) : nullptr);
  // The zygote froze its heap with the collector off; a fresh sandbox collects as usual until
  // its load freezes the heap again.
  Ref gc(PyImport_ImportModule("gc"));
  Ref enabled(gc ? PyObject_CallMethod(gc.get(), "enable", nullptr) : nullptr);
  PyErr_Clear();
}

std::string PythonPlugin::python_version() const {
  std::string v = Py_GetVersion();
  return v.substr(0, v.find(' '));
}

std::string PythonPlugin::numpy_version() const {
  Ref numpy(PyImport_ImportModule("numpy"));
  Ref version(numpy ? PyObject_GetAttrString(numpy.get(), "__version__") : nullptr);
  PyErr_Clear();
  return version ? utf8(version.get()) : std::string("?");
}

bool PythonPlugin::preload(const std::string& path) noexcept {
  Ref text(PyUnicode_DecodeFSDefault(path.c_str()));
  Ref done(text ? PyObject_CallMethod(impl_->glue.get(), "preload", "O", text.get()) : nullptr);
  const bool ok = done && done.get() == Py_True;
  PyErr_Clear();
  return ok;
}

std::optional<PythonError> PythonPlugin::load(const LoadRequest& request, PluginDescription& out) {
  Impl& im = *impl_;
  const bool group = !request.members.empty();
  auto error = [&]() -> std::optional<PythonError> { return take_exception(im.format_error.get(), group); };

  Ref state(PyBytes_FromStringAndSize(reinterpret_cast<const char*>(request.state.data()),
                                      static_cast<Py_ssize_t>(request.state.size())));
  if (!state) return error();
  if (group) {
    Ref members(member_list(request.members));
    if (!members) return error();
    const std::string& name = request.instance_name;
    im.session = Ref(PyObject_CallMethod(im.glue.get(), "load_group", "s#OdIIO", name.data(),
                                         static_cast<Py_ssize_t>(name.size()), members.get(), request.sample_rate,
                                         request.channels, request.max_frames, state.get()));
  } else {
    Ref params(param_list(request.params));
    Ref path(PyUnicode_DecodeFSDefault(request.path.c_str()));
    if (!params || !path) return error();
    im.session = Ref(PyObject_CallMethod(im.glue.get(), "load", "OdIIOOO", path.get(), request.sample_rate,
                                         request.channels, request.max_frames, params.get(), state.get(),
                                         request.inspect ? Py_True : Py_False));
  }
  if (!im.session) return error();
  im.members = group ? request.members.size() : 0;
  im.process = Ref(PyObject_GetAttrString(im.session.get(), "process"));
  im.accept = Ref(PyObject_GetAttrString(im.session.get(), "accept"));
  Ref info(PyObject_CallMethod(im.session.get(), "info", nullptr));
  if (!im.process || !im.accept || !info) return error();
  if (!PyDict_Check(info.get())) return PythonError{"session.info() is not a dict", {}};

  Ref preloaded(PyObject_GetAttrString(im.session.get(), "preloaded"));
  out.preloaded = preloaded && PyObject_IsTrue(preloaded.get()) == 1;
  PyErr_Clear();
  describe(info.get(), out);
  return std::nullopt;
}

std::optional<PythonError> PythonPlugin::bind_slots(std::span<float* const> slots, std::uint32_t channels,
                                                    std::uint32_t max_frames, std::size_t channel_stride) {
  Impl& im = *impl_;
  im.drop_views();
  im.slot_base.assign(slots.begin(), slots.end());
  im.channels = channels;
  im.max_frames = max_frames;
  im.channel_stride = channel_stride;
  im.views.assign(slots.size() * max_frames, nullptr);
  for (std::uint32_t s = 0; s < slots.size(); ++s) {
    if (im.view(s, max_frames) == nullptr) return take_exception(im.format_error.get());
  }
  return std::nullopt;
}

BlockResult PythonPlugin::process(std::uint32_t slot, std::uint32_t frames) noexcept {
  Impl& im = *impl_;
  try {
    member_errors_.clear();
    if (!im.process || slot >= im.slot_base.size() || frames == 0 || frames > im.max_frames) {
      last_error_ = {"job out of range (slot " + std::to_string(slot) + ", " + std::to_string(frames) + " frames)", {}};
      return BlockResult::failed;
    }
    PyObject* view = im.view(slot, frames);
    if (view == nullptr) {
      last_error_ = take_exception(im.format_error.get());
      return BlockResult::failed;
    }
    Ref result(PyObject_CallOneArg(im.process.get(), view));
    if (!result) {
      last_error_ = take_exception(im.format_error.get());
      return BlockResult::failed;
    }
    if (result.get() == Py_None || result.get() == Py_True) return BlockResult::processed;
    if (result.get() == Py_False) return BlockResult::passthrough;
    if (im.members > 0 && PyList_Check(result.get())) {
      // A group: [(member, message, traceback), ...] of the members that raised in this block.
      for (Py_ssize_t i = 0; i < PyList_GET_SIZE(result.get()); ++i) {
        PyObject* item = PyList_GET_ITEM(result.get(), i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) continue;
        const long member = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
        if (PyErr_Occurred() != nullptr || member < 0 || static_cast<std::size_t>(member) >= im.members) {
          PyErr_Clear();
          continue;
        }
        member_errors_.push_back({utf8(PyTuple_GET_ITEM(item, 1)), utf8(PyTuple_GET_ITEM(item, 2)),
                                  static_cast<std::int32_t>(member)});
      }
      return BlockResult::processed;
    }
    Ref copied(PyObject_CallFunctionObjArgs(im.accept.get(), view, result.get(), nullptr));
    if (!copied) {
      last_error_ = take_exception(im.format_error.get());
      return BlockResult::failed;
    }
    return BlockResult::processed;
  } catch (...) {
    PyErr_Clear();
    return BlockResult::failed;
  }
}

std::variant<PythonPlugin::ParamSet, PythonError> PythonPlugin::set_param(const std::string& key,
                                                                          const ParamValue& value,
                                                                          std::uint32_t member) {
  Impl& im = *impl_;
  if (!im.session) return PythonError{"no plugin loaded", {}};
  Ref result;
  if (im.members > 0) {
    result = Ref(PyObject_CallMethod(im.session.get(), "set_param", "s#NI", key.data(),
                                     static_cast<Py_ssize_t>(key.size()), to_python(value), member));
  } else if (member != 0) {
    return PythonError{"member " + std::to_string(member) + ": this sandbox runs one plugin, not a group", {}};
  } else {
    result = Ref(PyObject_CallMethod(im.session.get(), "set_param", "s#N", key.data(),
                                     static_cast<Py_ssize_t>(key.size()), to_python(value)));
  }
  if (!result) return take_exception(im.format_error.get(), im.members > 0);
  ParamSet out;
  PyObject* latency = result.get();
  // The glue's own answer: an int, or (an earlier-API plugin) (latency, read-back or None).
  if (PyTuple_Check(result.get()) && PyTuple_GET_SIZE(result.get()) == 2) {
    latency = PyTuple_GET_ITEM(result.get(), 0);
    PyObject* read_back = PyTuple_GET_ITEM(result.get(), 1);
    if (read_back != Py_None) out.read_back = from_python(read_back);
  }
  const long frames = PyLong_AsLong(latency);
  if (PyErr_Occurred()) return take_exception(im.format_error.get());
  out.latency = static_cast<std::uint32_t>(frames);
  return out;
}

std::variant<std::uint32_t, PythonError> PythonPlugin::set_rate(double rate) {
  Impl& im = *impl_;
  if (!im.session) return PythonError{"no plugin loaded", {}};
  Ref result(PyObject_CallMethod(im.session.get(), "set_rate", "d", rate));
  if (!result) return take_exception(im.format_error.get(), im.members > 0);
  const long frames = PyLong_AsLong(result.get());
  if (PyErr_Occurred()) return take_exception(im.format_error.get());
  return static_cast<std::uint32_t>(frames);
}

std::variant<std::vector<std::byte>, PythonError> PythonPlugin::get_state() {
  Impl& im = *impl_;
  if (!im.session) return PythonError{"no plugin loaded", {}};
  Ref result(PyObject_CallMethod(im.session.get(), "get_state", nullptr));
  if (!result) return take_exception(im.format_error.get(), im.members > 0);
  if (!PyBytes_Check(result.get())) return PythonError{"get_state() did not return bytes", {}};
  const auto* data = reinterpret_cast<const std::byte*>(PyBytes_AS_STRING(result.get()));
  return std::vector<std::byte>(data, data + PyBytes_GET_SIZE(result.get()));
}

std::size_t PythonPlugin::member_count() const noexcept { return impl_->members; }

std::vector<PythonPlugin::MemberStats> PythonPlugin::member_stats() {
  Impl& im = *impl_;
  std::vector<MemberStats> out;
  if (im.members == 0) return out;
  out.resize(im.members);
  // GroupSession.stats(): ([exceptions per member], [process ns per member]).
  Ref stats(PyObject_CallMethod(im.session.get(), "stats", nullptr));
  if (stats && PyTuple_Check(stats.get()) && PyTuple_GET_SIZE(stats.get()) == 2) {
    PyObject* exceptions = PyTuple_GET_ITEM(stats.get(), 0);
    PyObject* ns = PyTuple_GET_ITEM(stats.get(), 1);
    for (std::size_t i = 0; i < im.members; ++i) {
      const auto at = static_cast<Py_ssize_t>(i);
      if (PyList_Check(exceptions) && at < PyList_GET_SIZE(exceptions))
        out[i].exceptions = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(exceptions, at));
      if (PyList_Check(ns) && at < PyList_GET_SIZE(ns))
        out[i].process_ns = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(ns, at));
    }
  }
  PyErr_Clear();
  return out;
}

void PythonPlugin::shutdown() noexcept {
  Impl& im = *impl_;
  if (im.session) {
    Ref r(PyObject_CallMethod(im.session.get(), "shutdown", nullptr));
    if (!r) {
      PythonError e = take_exception(im.format_error.get());
      if (im.log) im.log(2, "shutdown: " + e.message);
    }
  }
  Ref flushed(PyObject_CallMethod(im.glue.get(), "flush_stdio", nullptr));
  PyErr_Clear();
}

void PythonPlugin::freeze_heap() noexcept {
  Ref collected(PyObject_CallNoArgs(impl_->gc_collect.get()));
  PyErr_Clear();
  Ref gc(PyImport_ImportModule("gc"));
  if (gc) {
    Ref frozen(PyObject_CallMethod(gc.get(), "freeze", nullptr));
    Ref disabled(PyObject_CallMethod(gc.get(), "disable", nullptr));
  }
  PyErr_Clear();
}

bool PythonPlugin::collect_if_needed(bool idle) noexcept {
  Impl& im = *impl_;
  if (!idle && ++im.blocks_since_check < 64) return false;
  im.blocks_since_check = 0;
  Ref counts(PyObject_CallNoArgs(im.gc_get_count.get()));
  if (!counts || !PyTuple_Check(counts.get()) || PyTuple_GET_SIZE(counts.get()) != 3) {
    PyErr_Clear();
    return false;
  }
  const long gen0 = PyLong_AsLong(PyTuple_GET_ITEM(counts.get(), 0));
  const long gen1 = PyLong_AsLong(PyTuple_GET_ITEM(counts.get(), 1));
  const long gen2 = PyLong_AsLong(PyTuple_GET_ITEM(counts.get(), 2));
  PyErr_Clear();
  int generation = -1;
  if (idle) {
    if (gen0 > 0 || gen1 > 0 || gen2 > 0) generation = 2;
  } else if (gen1 > 10) {
    generation = 1;  // young garbage piled up while busy: a short collection between blocks
  } else if (gen0 > 20000) {
    generation = 0;
  }
  if (generation < 0) return false;
  Ref r(PyObject_CallFunction(im.gc_collect.get(), "i", generation));
  PyErr_Clear();
  return true;
}

PythonPlugin::GilRelease::GilRelease() noexcept : state_(PyEval_SaveThread()) {}
PythonPlugin::GilRelease::~GilRelease() { PyEval_RestoreThread(static_cast<PyThreadState*>(state_)); }

}  // namespace sandpipe::sandbox
