// SPDX-License-Identifier: Apache-2.0
// Bindings of DataDistEngine: type conversion, GIL release, errors via ThrowIfError. Python
// (cache_manager.py) raises upstream's TypeError / ValueError; the core owns every semantic
// check (LLM_PARAM_INVALID), so a caller of _core cannot crash the process either. Block lists
// are converted here, in one pass, with the Python API's TypeError / ValueError (BlockIndices).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <limits>
#include <type_traits>

#include "bindings/bindings.h"
#include "engine/data_dist_engine.h"
#include "engine/tensor_size.h"

namespace llm_datadist::bindings {

namespace {

using KeyTuple = std::tuple<uint64_t, uint64_t, uint64_t, uint64_t>;  // cluster, req, model, prefix
using BlocksKeyTuple = std::tuple<uint64_t, uint64_t>;                // cluster, model

CacheDesc MakeDesc(uint32_t num_tensors, const std::vector<int64_t> &shape, int32_t data_type, uint32_t placement) {
  CacheDesc desc;
  desc.num_tensors = num_tensors;
  desc.shape = shape;
  desc.data_type = static_cast<DataType>(data_type);
  desc.placement = placement == 0 ? CachePlacement::kHost : CachePlacement::kDevice;
  return desc;
}

std::vector<CacheKeySpec> MakeKeys(const std::vector<KeyTuple> &keys) {
  std::vector<CacheKeySpec> specs;
  specs.reserve(keys.size());
  for (const KeyTuple &k : keys) specs.push_back({std::get<0>(k), std::get<1>(k), std::get<2>(k), std::get<3>(k)});
  return specs;
}

std::optional<BlocksKeySpec> MakeBlocksKey(const std::optional<BlocksKeyTuple> &key) {
  if (!key) return std::nullopt;
  return BlocksKeySpec{std::get<0>(*key), std::get<1>(*key)};
}

// Runs a core call with the GIL released (every core call may block or take long).
template <typename Fn>
auto WithoutGil(Fn &&fn) {
  py::gil_scoped_release release;
  return fn();
}

py::tuple CacheResult(const std::shared_ptr<CacheEntry> &entry) {
  py::list addrs;
  for (uintptr_t a : entry->tensor_addrs) addrs.append(py::int_(static_cast<uint64_t>(a)));
  return py::make_tuple(entry->cache_id, addrs);
}

// ---- Zero-copy tensor views -------------------------------------------------------------
// DLPack (https://dmlc.github.io/dlpack) ABI, declared here to avoid a header dependency.
struct DLDevice { int32_t device_type; int32_t device_id; };
struct DLDataType { uint8_t code; uint8_t bits; uint16_t lanes; };
struct DLTensor {
  void *data; DLDevice device; int32_t ndim; DLDataType dtype;
  int64_t *shape; int64_t *strides; uint64_t byte_offset;
};
struct DLManagedTensor { DLTensor dl_tensor; void *manager_ctx; void (*deleter)(DLManagedTensor *); };
constexpr int32_t kDLCPU = 1;
constexpr int32_t kDLCUDA = 2;

bool DlpackType(int32_t data_type, DLDataType *out) {
  switch (data_type) {
    case DT_FLOAT: *out = {2, 32, 1}; return true;
    case DT_FLOAT16: *out = {2, 16, 1}; return true;
    case DT_BF16: *out = {4, 16, 1}; return true;
    case DT_DOUBLE: *out = {2, 64, 1}; return true;
    case DT_INT8: *out = {0, 8, 1}; return true;
    case DT_INT16: *out = {0, 16, 1}; return true;
    case DT_INT32: *out = {0, 32, 1}; return true;
    case DT_INT64: *out = {0, 64, 1}; return true;
    case DT_UINT8: *out = {1, 8, 1}; return true;
    case DT_UINT16: *out = {1, 16, 1}; return true;
    case DT_UINT32: *out = {1, 32, 1}; return true;
    case DT_UINT64: *out = {1, 64, 1}; return true;
    case DT_BOOL: *out = {6, 8, 1}; return true;
    default: return false;
  }
}

// numpy has no bfloat16: BF16 tensors appear as uint16 (bit patterns); torch views keep bf16.
const char *NumpyType(int32_t data_type) {
  switch (data_type) {
    case DT_FLOAT: return "float32";
    case DT_FLOAT16: return "float16";
    case DT_BF16: return "uint16";
    case DT_DOUBLE: return "float64";
    case DT_INT8: return "int8";
    case DT_INT16: return "int16";
    case DT_INT32: return "int32";
    case DT_INT64: return "int64";
    case DT_UINT8: return "uint8";
    case DT_UINT16: return "uint16";
    case DT_UINT32: return "uint32";
    case DT_UINT64: return "uint64";
    case DT_BOOL: return "bool";
    default: return nullptr;
  }
}

// One tensor of a cache, pinned: the cache's memory stays valid while this object (or a numpy
// array / torch tensor made from it) is alive, even after deallocate_cache or finalize.
class TensorView {
 public:
  explicit TensorView(TensorPin pin) : pin_(std::move(pin)) {}

  uint64_t ptr() const { return reinterpret_cast<uintptr_t>(pin_.data); }
  uint64_t nbytes() const { return pin_.bytes; }
  const char *memory_kind() const { return MemoryKindName(pin_.memory_kind); }
  int device_ordinal() const { return pin_.device_ordinal; }
  const std::vector<int64_t> &shape() const { return pin_.entry->desc.shape; }
  int32_t data_type() const { return pin_.entry->desc.data_type; }

  py::tuple DlpackDevice() const {
    if (pin_.memory_kind == MemoryKind::kCudaDevice) return py::make_tuple(kDLCUDA, pin_.device_ordinal);
    return py::make_tuple(kDLCPU, 0);
  }

  py::capsule Dlpack(py::handle self) const {
    DLDataType dtype{};
    if (!DlpackType(data_type(), &dtype))
      ThrowIfError(DetailedStatus(LLM_PARAM_INVALID, detail::Concat("data_type ", data_type(),
                                                                    " has no DLPack equivalent")));
    struct Context {
      py::object owner;  // keeps this TensorView (and so the pin) alive
      std::vector<int64_t> shape;
      DLManagedTensor managed;
    };
    auto *ctx = new Context{py::reinterpret_borrow<py::object>(self), shape(), {}};
    DLTensor &t = ctx->managed.dl_tensor;
    t.data = pin_.data;
    auto dev = DlpackDevice();
    t.device = {dev[0].cast<int32_t>(), dev[1].cast<int32_t>()};
    t.ndim = static_cast<int32_t>(ctx->shape.size());
    t.dtype = dtype;
    t.shape = ctx->shape.data();
    t.strides = nullptr;  // compact row-major
    t.byte_offset = 0;
    ctx->managed.manager_ctx = ctx;
    ctx->managed.deleter = [](DLManagedTensor *m) {
      py::gil_scoped_acquire gil;
      delete static_cast<Context *>(m->manager_ctx);
    };
    // A capsule never consumed (still named "dltensor") frees itself; once a consumer renamed
    // it to "used_dltensor" the consumer owns it and calls the deleter.
    return py::capsule(&ctx->managed, "dltensor", [](PyObject *capsule) {
      if (PyCapsule_IsValid(capsule, "dltensor")) {
        auto *m = static_cast<DLManagedTensor *>(PyCapsule_GetPointer(capsule, "dltensor"));
        m->deleter(m);
      }
    });
  }

  py::array Numpy(py::handle self) const {
    if (pin_.memory_kind == MemoryKind::kCudaDevice)
      ThrowIfError(DetailedStatus(LLM_PARAM_INVALID,
                                  "a CUDA device cache cannot be viewed as numpy; use the torch view"));
    const char *np_type = NumpyType(data_type());
    if (np_type == nullptr)
      ThrowIfError(DetailedStatus(LLM_PARAM_INVALID, detail::Concat("data_type ", data_type(),
                                                                    " has no numpy equivalent")));
    py::dtype dtype(np_type);
    return py::array(dtype, shape(), {}, pin_.data, self);
  }

 private:
  TensorPin pin_;
};

// A block-index list as the Python API takes it, converted and range-checked in one pass: a list
// or tuple whose every element is an int (a bool is one, as isinstance has it), or a
// one-dimensional integer numpy array, read as a buffer. Bad input raises the errors of
// _validation.check_int_list(values, name, "uint64"), with its messages: TypeError naming the
// container or the element, ValueError naming an element outside uint64.
template <typename T>
T Load(const uint8_t *p) {  // an element of a strided array, which may be unaligned
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::vector<uint64_t> BlockIndices(py::handle value, const char *name) {
  PyObject *obj = value.ptr();
  const bool list = PyList_Check(obj);
  if (list || PyTuple_Check(obj)) {
    const Py_ssize_t n = list ? PyList_GET_SIZE(obj) : PyTuple_GET_SIZE(obj);
    std::vector<uint64_t> out(static_cast<size_t>(n));
    // No Python code runs inside the loop (ints are read in place), so the list cannot change
    // under it.
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject *item = list ? PyList_GET_ITEM(obj, i) : PyTuple_GET_ITEM(obj, i);
      if (!PyLong_Check(item)) {
        throw py::type_error(detail::Concat(name, "[", i, "] only support [int], but got ",
                                            py::type::handle_of(item).attr("__name__").cast<std::string>(), "."));
      }
      const unsigned long long v = PyLong_AsUnsignedLongLong(item);
      if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
        PyErr_Clear();  // negative, or beyond 64 bits
        throw py::value_error(detail::Concat(name, "[", i, "]'s value is out of range, ",
                                             py::str(item).cast<std::string>(), " is not a uint64 value, valid range is [0, ",
                                             std::numeric_limits<uint64_t>::max(), "]."));
      }
      out[static_cast<size_t>(i)] = v;
    }
    return out;
  }
  if (py::isinstance<py::array>(value)) {
    auto array = py::reinterpret_borrow<py::array>(value);
    const py::dtype dtype = array.dtype();
    const char kind = dtype.kind();
    const auto itemsize = static_cast<size_t>(dtype.itemsize());
    if (array.ndim() != 1 || (kind != 'i' && kind != 'u') || !dtype.attr("isnative").cast<bool>()) {
      throw py::type_error(detail::Concat(name, " as an array needs one dimension of native integers, but got a ",
                                          array.ndim(), "-d ", py::str(dtype).cast<std::string>(), " array."));
    }
    const auto n = static_cast<size_t>(array.shape(0));
    const py::ssize_t stride = array.strides(0);
    const auto *base = static_cast<const uint8_t *>(array.data());
    std::vector<uint64_t> out(n);
    if (kind == 'u' && itemsize == 8 && stride == 8) {
      if (n != 0) std::memcpy(out.data(), base, n * 8);
      return out;
    }
    for (size_t i = 0; i < n; ++i) {
      const uint8_t *p = base + static_cast<py::ssize_t>(i) * stride;
      // Widened as its own type: the sign of a signed element survives, to be refused.
      int64_t signed_value = 0;
      uint64_t unsigned_value = 0;
      if (kind == 'i') {
        switch (itemsize) {
          case 1: signed_value = Load<int8_t>(p); break;
          case 2: signed_value = Load<int16_t>(p); break;
          case 4: signed_value = Load<int32_t>(p); break;
          default: signed_value = Load<int64_t>(p); break;
        }
        if (signed_value < 0) {
          throw py::value_error(detail::Concat(name, "[", i, "]'s value is out of range, ", signed_value,
                                               " is not a uint64 value, valid range is [0, ",
                                               std::numeric_limits<uint64_t>::max(), "]."));
        }
        unsigned_value = static_cast<uint64_t>(signed_value);
      } else {
        switch (itemsize) {
          case 1: unsigned_value = Load<uint8_t>(p); break;
          case 2: unsigned_value = Load<uint16_t>(p); break;
          case 4: unsigned_value = Load<uint32_t>(p); break;
          default: unsigned_value = Load<uint64_t>(p); break;
        }
      }
      out[i] = unsigned_value;
    }
    return out;
  }
  throw py::type_error(detail::Concat(name, " only support [list, tuple], but got ",
                                      py::type::handle_of(value).attr("__name__").cast<std::string>(), "."));
}

py::object PoolStatsDict(const std::optional<PoolStats> &stats) {
  if (!stats) return py::none();
  py::dict d;
  d["capacity"] = stats->capacity;
  d["page_size"] = stats->page_size;
  d["used_bytes"] = stats->used_bytes;
  d["free_bytes"] = stats->free_bytes;
  d["allocation_count"] = stats->allocation_count;
  d["free_range_count"] = stats->free_range_count;
  d["largest_free_range"] = stats->largest_free_range;
  return d;
}

// One Metrics snapshot as {kind: {operations, bytes, errors, latency_ns_sum, latency_buckets,
// errors_by_code: {code: n}}}.
py::dict MetricsDict(const MetricsSnapshot &snapshot) {
  py::dict kinds;
  for (size_t i = 0; i < kOpKinds; ++i) {
    const OpSnapshot &s = snapshot.kinds[i];
    py::dict k;
    k["operations"] = s.operations;
    k["bytes"] = s.bytes;
    k["errors"] = s.errors;
    k["latency_ns_sum"] = s.latency_ns_sum;
    k["latency_buckets"] = std::vector<uint64_t>(s.latency_buckets.begin(), s.latency_buckets.end());
    py::dict codes;
    for (const auto &[code, n] : s.errors_by_code) codes[py::int_(code)] = n;
    k["errors_by_code"] = codes;
    kinds[OpKindName(static_cast<OpKind>(i))] = k;
  }
  return kinds;
}

// ---- Engine.transfer: the per-request call -------------------------------------------------
// Bound without pybind11's dispatcher, as a METH_FASTCALL method: for its arguments the
// dispatcher (and the argument tuple Python builds for it) cost about as many instructions as the
// core's whole one-sided 4 KiB pull (callgrind, docs/transfer.md "Small pulls"). The remote key
// comes as the one tuple each Python key keeps (llm_types `_transfer`): unpacking it into
// arguments cost another ~1k instructions. Conversions and errors are pybind11's: an int out of
// its C++ type's range is a TypeError, a failed core call an LLMException
// (SetPythonErrorFromCurrentException).
constexpr const char *kTransferArgs[] = {
    "push", "key", "local_cache_id", "blocks_api", "local_batch_index", "size", "remote_blocks", "local_blocks",
    "remote_layer_begin", "remote_layer_end", "local_layer_begin", "local_layer_end", "tensor_num_per_layer",
    "remote_block_bytes", "local_offset"};
constexpr Py_ssize_t kTransferRequiredArgs = 13;
constexpr Py_ssize_t kTransferMaxArgs = sizeof(kTransferArgs) / sizeof(kTransferArgs[0]);
// The key tuple's fields, in order.
constexpr const char *kTransferKeyFields[] = {"remote_cluster_id", "key_kind", "req_id", "prefix_id",
                                              "model_id", "remote_cache_id", "remote_batch_index"};
constexpr Py_ssize_t kTransferKeyFieldCount = sizeof(kTransferKeyFields) / sizeof(kTransferKeyFields[0]);

// `*out` = `value`: an int (or an object with __index__, not a float) within T's range.
template <typename T>
void ReadInt(PyObject *value, const char *name, T *out) {
  py::object index;
  if (!PyLong_Check(value)) {
    if (PyFloat_Check(value) || !PyIndex_Check(value)) {
      throw py::type_error(
          detail::Concat("Engine.transfer: ", name, " must be an int, but got ", Py_TYPE(value)->tp_name, "."));
    }
    index = py::reinterpret_steal<py::object>(PyNumber_Index(value));
    if (!index) throw py::error_already_set();
    value = index.ptr();
  }
  bool in_range = false;
  if constexpr (std::is_signed_v<T>) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    in_range = overflow == 0 && !(v == -1 && PyErr_Occurred()) && v >= std::numeric_limits<T>::min() &&
               v <= std::numeric_limits<T>::max();
    *out = static_cast<T>(v);
  } else {
    const unsigned long long v = PyLong_AsUnsignedLongLong(value);
    in_range = !(v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) && v <= std::numeric_limits<T>::max();
    *out = static_cast<T>(v);
  }
  if (!in_range) {
    PyErr_Clear();
    throw py::type_error(detail::Concat("Engine.transfer: ", name, " = ", py::str(value).cast<std::string>(),
                                        " is out of range for ", std::is_signed_v<T> ? "int" : "uint", sizeof(T) * 8,
                                        "."));
  }
}

bool BoolArg(PyObject *value, const char *name) {
  if (!PyBool_Check(value)) {
    throw py::type_error(
        detail::Concat("Engine.transfer: ", name, " must be a bool, but got ", Py_TYPE(value)->tp_name, "."));
  }
  return value == Py_True;
}

PyObject *Transfer(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  try {
    if (nargs < kTransferRequiredArgs || nargs > kTransferMaxArgs) {
      throw py::type_error(detail::Concat("Engine.transfer takes ", kTransferRequiredArgs, " to ", kTransferMaxArgs,
                                          " positional arguments, but got ", nargs, "."));
    }
    DataDistEngine &e = py::handle(self).cast<DataDistEngine &>();
    const bool push = BoolArg(args[0], kTransferArgs[0]);
    PyObject *key = args[1];
    if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != kTransferKeyFieldCount) {
      throw py::type_error(detail::Concat("Engine.transfer: key must be a tuple of ", kTransferKeyFieldCount,
                                          " ints, but got ", Py_TYPE(key)->tp_name, "."));
    }
    auto field = [&](Py_ssize_t i, auto *out) { ReadInt(PyTuple_GET_ITEM(key, i), kTransferKeyFields[i], out); };
    auto arg = [&](Py_ssize_t i, auto *out) { ReadInt(args[i], kTransferArgs[i], out); };
    TransferArgs a;
    uint8_t key_kind = 0;
    uint64_t req_id = 0, prefix_id = 0, model_id = 0;
    field(0, &a.remote_cluster_id);
    field(1, &key_kind);
    field(2, &req_id);
    field(3, &prefix_id);
    field(4, &model_id);
    field(5, &a.remote_cache_id);
    field(6, &a.remote_batch_index);
    a.key_kind = static_cast<RemoteKeyKind>(key_kind);
    a.key = CacheKeySpec{a.remote_cluster_id, req_id, model_id, prefix_id};
    a.blocks_model_id = model_id;
    arg(2, &a.local_cache_id);
    a.blocks_api = BoolArg(args[3], kTransferArgs[3]);
    arg(4, &a.local_batch_index);
    arg(5, &a.size);
    arg(8, &a.layers.remote_begin);
    arg(9, &a.layers.remote_end);
    arg(10, &a.layers.local_begin);
    arg(11, &a.layers.local_end);
    arg(12, &a.layers.tensor_num_per_layer);
    if (nargs > 13) arg(13, &a.remote_block_bytes);
    if (nargs > 14) arg(14, &a.local_offset);
    // The API's names, in the order the Python API lists them: a pull takes src_blocks
    // (remote) then dst_blocks (local), a push src_blocks (local) then dst_blocks.
    const py::handle remote_blocks(args[6]), local_blocks(args[7]);
    if (push) {
      a.local_blocks = BlockIndices(local_blocks, "src_blocks");
      a.remote_blocks = BlockIndices(remote_blocks, "dst_blocks");
    } else {
      a.remote_blocks = BlockIndices(remote_blocks, "src_blocks");
      a.local_blocks = BlockIndices(local_blocks, "dst_blocks");
    }
    const char *operation = push ? (a.blocks_api ? "push_blocks" : "push_cache")
                                 : (a.blocks_api ? "pull_blocks" : "pull_cache");
    DetailedStatus status = WithoutGil([&] { return push ? e.Push(a) : e.Pull(a); });
    if (!status.ok()) ThrowIfError(std::move(status.With("operation", operation)));
    Py_RETURN_NONE;
  } catch (...) {
    SetPythonErrorFromCurrentException();
    return nullptr;
  }
}

// The signature line pybind11-stubgen reads (as pybind11 would write it).
const std::string &TransferDoc() {
  static const std::string doc = [] {
    std::string d = "transfer(self: llm_datadist._core.Engine";
    for (Py_ssize_t i = 0; i < kTransferMaxArgs; ++i) {
      const std::string name = kTransferArgs[i];
      std::string type = "typing.SupportsInt | typing.SupportsIndex";
      if (name == "push" || name == "blocks_api") type = "bool";
      if (name == "remote_blocks" || name == "local_blocks") type = "object";
      if (name == "key") type = "tuple";
      d += ", " + name + ": " + type + (i >= kTransferRequiredArgs ? " = 0" : "");
    }
    return d + ") -> None\n";
  }();
  return doc;
}

void AddTransferMethod(py::class_<DataDistEngine> &engine) {
  static PyMethodDef def = {"transfer", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&Transfer)),
                            METH_FASTCALL, TransferDoc().c_str()};
  auto *type = reinterpret_cast<PyTypeObject *>(engine.ptr());
  py::object method = py::reinterpret_steal<py::object>(PyDescr_NewMethod(type, &def));
  if (!method) throw py::error_already_set();
  engine.attr("transfer") = method;
}

}  // namespace

void RegisterEngineBindings(py::module_ &m) {
  // The link protocol's version (csrc/link/wire.h), for tests that speak it byte by byte.
  m.attr("LINK_PROTOCOL_VERSION") = kProtocolVersion;
  // The listener's limits (csrc/link/link_manager.h), for the tests that push against them.
  py::dict limits;
  limits["max_concurrent_handshakes"] = kMaxConcurrentHandshakes;
  limits["max_handshakes_per_address"] = kMaxHandshakesPerAddress;
  limits["server_handshake_timeout_ms"] = kServerHandshakeTimeoutMs;
  limits["server_hello_timeout_ms"] = kServerHelloTimeoutMs;
  limits["max_handshake_payload"] = kMaxHandshakePayload;
  limits["peer_dead_ms"] = kPeerDeadMs;
  m.attr("LINK_LIMITS") = limits;
  m.def(
      "calc_tensor_size",
      [](const std::vector<int64_t> &shape, int32_t data_type) {
        int64_t bytes = 0;
        ThrowIfError(CalcTensorSize(shape, data_type, &bytes));
        return bytes;
      },
      py::arg("shape"), py::arg("data_type"),
      "Bytes of one tensor of `shape` and ge DataType number `data_type`.");

  py::class_<TensorView>(m, "TensorView")
      .def_property_readonly("ptr", &TensorView::ptr)
      .def_property_readonly("nbytes", &TensorView::nbytes)
      .def_property_readonly("memory_kind", &TensorView::memory_kind)
      .def_property_readonly("device_ordinal", &TensorView::device_ordinal)
      .def_property_readonly("shape", &TensorView::shape)
      .def_property_readonly("data_type", &TensorView::data_type)
      .def("__dlpack_device__", &TensorView::DlpackDevice)
      .def(
          "__dlpack__",
          [](py::handle self, py::args, py::kwargs) { return self.cast<const TensorView &>().Dlpack(self); })
      // not "numpy": a method of that name would hide the numpy module inside the class in the stub
      .def("as_numpy", [](py::handle self) { return self.cast<const TensorView &>().Numpy(self); });

  // Registered before Engine, whose signatures name it: a type pybind11 does not know yet is
  // written into the docstrings (and so into the generated _core.pyi) as its C++ name.
  py::enum_<LlmRole>(m, "LlmRole")
      .value("kPrompt", LlmRole::kPrompt)
      .value("kDecoder", LlmRole::kDecoder)
      .value("kMix", LlmRole::kMix);

  py::class_<DataDistEngine> engine(m, "Engine");
  engine
      .def(py::init<uint64_t, LlmRole>(), py::arg("cluster_id"), py::arg("role"))
      .def(
          "initialize",
          [](DataDistEngine &e, const std::map<std::string, std::string> &options) {
            DetailedStatus status = WithoutGil([&] { return e.Initialize(options); });
            ThrowIfError(status.With("operation", "init"));
          },
          py::arg("options"))
      .def("finalize", &DataDistEngine::Finalize, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("initialized", &DataDistEngine::initialized)
      .def_property_readonly("cluster_id", &DataDistEngine::cluster_id)
      .def_property("role", &DataDistEngine::role, &DataDistEngine::set_role)
      .def_property_readonly("device_backend",
                             [](const DataDistEngine &e) { return DeviceBackendName(e.options().device_backend); })
      .def_property_readonly("device_backend_reason",
                             [](const DataDistEngine &e) { return e.options().device_backend_reason; })
      .def_property_readonly("sync_kv_timeout_ms", [](const DataDistEngine &e) { return e.options().sync_kv_timeout_ms; })
      .def_property_readonly("device_id", [](const DataDistEngine &e) { return e.options().device_id; })
      .def(
          "allocate_cache",
          [](DataDistEngine &e, uint32_t num_tensors, const std::vector<int64_t> &shape, int32_t data_type,
             uint32_t placement, const std::vector<KeyTuple> &keys) {
            std::shared_ptr<CacheEntry> entry;
            DetailedStatus status = WithoutGil([&] { return e.AllocateCache(MakeDesc(num_tensors, shape, data_type, placement), MakeKeys(keys), &entry); });
            ThrowIfError(status.With("operation", "allocate_cache"));
            return CacheResult(entry);
          },
          py::arg("num_tensors"), py::arg("shape"), py::arg("data_type"), py::arg("placement"), py::arg("keys"))
      .def(
          "allocate_blocks_cache",
          [](DataDistEngine &e, uint32_t num_tensors, const std::vector<int64_t> &shape, int32_t data_type,
             uint32_t placement, const std::optional<BlocksKeyTuple> &key) {
            std::shared_ptr<CacheEntry> entry;
            DetailedStatus status = WithoutGil([&] { return e.AllocateBlocksCache(MakeDesc(num_tensors, shape, data_type, placement), MakeBlocksKey(key),
                                             &entry); });
            ThrowIfError(status.With("operation", "allocate_blocks_cache"));
            return CacheResult(entry);
          },
          py::arg("num_tensors"), py::arg("shape"), py::arg("data_type"), py::arg("placement"), py::arg("key"))
      .def(
          "register_cache",
          [](DataDistEngine &e, uint32_t num_tensors, const std::vector<int64_t> &shape, int32_t data_type,
             uint32_t placement, const std::vector<uintptr_t> &addrs, const std::vector<KeyTuple> &keys) {
            std::shared_ptr<CacheEntry> entry;
            DetailedStatus status = WithoutGil([&] { return e.RegisterCache(MakeDesc(num_tensors, shape, data_type, placement), addrs, MakeKeys(keys),
                                       &entry); });
            ThrowIfError(status.With("operation", "register_cache"));
            return CacheResult(entry);
          },
          py::arg("num_tensors"), py::arg("shape"), py::arg("data_type"), py::arg("placement"), py::arg("addrs"),
          py::arg("keys"))
      .def(
          "register_blocks_cache",
          [](DataDistEngine &e, uint32_t num_tensors, const std::vector<int64_t> &shape, int32_t data_type,
             uint32_t placement, const std::vector<uintptr_t> &addrs, const std::optional<BlocksKeyTuple> &key) {
            std::shared_ptr<CacheEntry> entry;
            DetailedStatus status = WithoutGil([&] { return e.RegisterBlocksCache(MakeDesc(num_tensors, shape, data_type, placement), addrs,
                                             MakeBlocksKey(key), &entry); });
            ThrowIfError(status.With("operation", "register_blocks_cache"));
            return CacheResult(entry);
          },
          py::arg("num_tensors"), py::arg("shape"), py::arg("data_type"), py::arg("placement"), py::arg("addrs"),
          py::arg("key"))
      .def(
          "deallocate_cache",
          [](DataDistEngine &e, int64_t id) { ThrowIfError(e.DeallocateCache(id).With("operation", "deallocate_cache")); },
          py::arg("cache_id"))
      .def(
          "deallocate_blocks_cache",
          [](DataDistEngine &e, int64_t id) {
            ThrowIfError(e.DeallocateBlocksCache(id).With("operation", "deallocate_blocks_cache"));
          },
          py::arg("cache_id"))
      .def(
          "unregister_cache",
          [](DataDistEngine &e, int64_t id) { ThrowIfError(e.UnregisterCache(id).With("operation", "unregister_cache")); },
          py::arg("cache_id"))
      .def(
          "remove_cache_key",
          [](DataDistEngine &e, const KeyTuple &key) {
            ThrowIfError(e.RemoveCacheKey(MakeKeys({key})[0]).With("operation", "remove_cache_key"));
          },
          py::arg("key"))
      .def(
          "copy_cache",
          [](DataDistEngine &e, int64_t dst, int64_t src, uint32_t dst_batch, uint32_t src_batch, uint64_t offset,
             int64_t size) {
            DetailedStatus status = WithoutGil([&] { return e.CopyCache(dst, src, dst_batch, src_batch, offset, size); });
            ThrowIfError(status.With("operation", "copy_cache"));
          },
          py::arg("dst_cache_id"), py::arg("src_cache_id"), py::arg("dst_batch_index"), py::arg("src_batch_index"),
          py::arg("offset"), py::arg("size"))
      .def(
          "copy_blocks",
          [](DataDistEngine &e, int64_t id, const std::vector<std::pair<uint64_t, std::vector<uint64_t>>> &pairs) {
            DetailedStatus status = WithoutGil([&] { return e.CopyBlocks(id, pairs); });
            ThrowIfError(status.With("operation", "copy_blocks"));
          },
          py::arg("cache_id"), py::arg("src_to_dsts"))
      .def(
          "swap_blocks",
          [](DataDistEngine &e, int64_t src_id, uint32_t src_num_tensors, const std::vector<int64_t> &src_shape,
             int32_t src_dtype, uint32_t src_placement, const std::vector<uintptr_t> &src_addrs, int64_t dst_id,
             uint32_t dst_num_tensors, const std::vector<int64_t> &dst_shape, int32_t dst_dtype,
             uint32_t dst_placement, const std::vector<uintptr_t> &dst_addrs,
             const std::vector<std::pair<uint64_t, uint64_t>> &pairs) {
            CacheRef src{src_id, MakeDesc(src_num_tensors, src_shape, src_dtype, src_placement), src_addrs, true};
            CacheRef dst{dst_id, MakeDesc(dst_num_tensors, dst_shape, dst_dtype, dst_placement), dst_addrs, true};
            DetailedStatus status = WithoutGil([&] { return e.SwapBlocks(src, dst, pairs); });
            ThrowIfError(status.With("operation", "swap_blocks"));
          })
      .def(
          "tensor_view",
          [](const DataDistEngine &e, int64_t cache_id, uint32_t tensor_index) {
            TensorPin pin;
            ThrowIfError(e.PinTensor(cache_id, tensor_index, &pin).With("operation", "tensor_view"));
            return TensorView(std::move(pin));
          },
          py::arg("cache_id"), py::arg("tensor_index"))
      .def("pool_stats",
           [](const DataDistEngine &e, uint32_t placement) {
             return PoolStatsDict(e.GetPoolStats(placement == 0 ? CachePlacement::kHost : CachePlacement::kDevice));
           })
      .def(
          "switch_role",
          [](DataDistEngine &e, LlmRole role, const std::string &listen_ip_info) {
            DetailedStatus status = WithoutGil([&] { return e.SwitchRole(role, listen_ip_info); });
            ThrowIfError(status.With("operation", "switch_role"));
          },
          py::arg("role"), py::arg("listen_ip_info"))
      .def(
          "ensure_listening",
          [](DataDistEngine &e, const std::string &ip, uint16_t port) {
            DetailedStatus status = WithoutGil([&] { return e.EnsureListening(ip, port); });
            ThrowIfError(status.With("operation", "link"));
          },
          py::arg("ip"), py::arg("port"))
      .def(
          "link_clusters",
          [](DataDistEngine &e, const std::vector<std::tuple<uint64_t, std::string, uint16_t>> &targets,
             int32_t timeout_ms) {
            std::vector<LinkTarget> list;
            for (const auto &t : targets) list.push_back({std::get<0>(t), std::get<1>(t), std::get<2>(t)});
            std::vector<DetailedStatus> results;
            {
              py::gil_scoped_release release;
              results = e.LinkClusters(list, timeout_ms);
            }
            py::list out;
            for (const DetailedStatus &r : results) out.append(py::make_tuple(r.code(), r.message()));
            return out;
          },
          py::arg("targets"), py::arg("timeout_ms"),
          "Links (cluster_id, ip, port) targets in parallel; one (code, message) per target.")
      .def(
          "unlink_clusters",
          [](DataDistEngine &e, const std::vector<uint64_t> &ids, int32_t timeout_ms, bool force) {
            std::vector<DetailedStatus> results;
            {
              py::gil_scoped_release release;
              results = e.UnlinkClusters(ids, timeout_ms, force);
            }
            py::list out;
            for (const DetailedStatus &r : results) out.append(py::make_tuple(r.code(), r.message()));
            return out;
          },
          py::arg("cluster_ids"), py::arg("timeout_ms"), py::arg("force"))
      .def("link_info",
           [](const DataDistEngine &e, uint64_t cluster_id) -> py::object {
             std::optional<LinkInfo> info = e.GetLinkInfo(cluster_id);
             if (!info) return py::none();
             py::dict d;
             d["cluster_id"] = info->cluster_id;
             d["transport"] = info->transport;
             d["reason"] = info->reason;
             d["state"] = info->state;
             d["broken_reason"] = info->broken_reason;
             d["remote_address"] = info->remote_address;
             d["channel"] = info->channel;
             d["peer_pid"] = info->peer_pid;
             d["cuda_ipc"] = info->cuda_ipc;
             d["cuda_ipc_opened"] = info->cuda_ipc_opened;
             d["millis_since_rx"] = info->millis_since_rx;
             d["bytes_pulled"] = info->bytes_pulled;
             d["bytes_pushed"] = info->bytes_pushed;
             d["bytes_served"] = info->bytes_served;
             d["pulls"] = info->pulls;
             d["pushes"] = info->pushes;
             d["errors"] = info->errors;
             d["bytes_pushed_one_sided"] = info->bytes_pushed_one_sided;
             d["data_bytes_sent"] = info->data_bytes_sent;
             d["held"] = info->held;
             return d;
           })
      .def("metrics",
           [](const DataDistEngine &e) {
             const EngineMetricsSnapshot snap = WithoutGil([&] { return e.GetMetrics(); });
             py::dict d;
             d["enabled"] = snap.enabled;
             d["cluster_id"] = snap.cluster_id;
             std::vector<double> bounds;
             for (size_t i = 0; i < kLatencyBounds; ++i) bounds.push_back(LatencyBoundSeconds(i));
             d["latency_bounds_s"] = bounds;
             d["totals"] = MetricsDict(snap.totals);
             d["unlinked"] = MetricsDict(snap.unlinked);
             d["links_up"] = snap.links_up;
             d["links_broken"] = snap.links_broken;
             d["links_closed"] = snap.links_closed;
             py::dict links;
             for (const LinkMetricsSnapshot &l : snap.links) {
               py::dict ld;
               ld["transport"] = l.transport;
               ld["state"] = l.state;
               ld["channel"] = l.channel;
               ld["peer_pid"] = l.peer_pid;
               ld["kinds"] = MetricsDict(l.metrics);
               links[py::int_(l.cluster_id)] = ld;
             }
             d["links"] = links;
             py::dict pools;
             pools["host"] = PoolStatsDict(snap.host_pool);
             pools["device"] = PoolStatsDict(snap.device_pool);
             d["pools"] = pools;
             return d;
           })
      .def("linked_clusters", &DataDistEngine::LinkedClusters)
      .def("links_installed", &DataDistEngine::LinksInstalled, py::arg("cluster_id"))
      .def_property_readonly("listen_address", &DataDistEngine::ListenAddress)
      .def("cache_count", [](const DataDistEngine &e) { return e.registry().cache_count(); })
      .def("key_count", [](const DataDistEngine &e) { return e.registry().key_count(); })
      .def("has_cache", [](const DataDistEngine &e, int64_t id) { return e.FindCache(id) != nullptr; });
  AddTransferMethod(engine);

  // The key kinds transfer() takes (as ints: Python passes int(RemoteKeyKind.X) on the hot path).
  py::enum_<RemoteKeyKind>(m, "RemoteKeyKind")
      .value("CACHE_KEY", RemoteKeyKind::kCacheKey)
      .value("CACHE_ID_AND_INDEX", RemoteKeyKind::kCacheIdAndIndex)
      .value("BLOCKS_KEY", RemoteKeyKind::kBlocksKey)
      .value("ADDRESS", RemoteKeyKind::kAddress);

}

}  // namespace llm_datadist::bindings
