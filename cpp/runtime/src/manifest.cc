// memx.json reader: the checks of memx/package/manifest.py, in C++.
#include "memx/manifest.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "memx/errors.hpp"
#include "memx/snapshot.hpp"
#include "limits.hpp"
#include "pyjson.hpp"

namespace memx {

using nlohmann::json;

namespace {

const char* kind_of(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "NoneType";
    case json::value_t::boolean: return "bool";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "int";
    case json::value_t::number_float: return "float";
    case json::value_t::string: return "str";
    case json::value_t::array: return "list";
    case json::value_t::object: return "dict";
    default: return "unknown";
  }
}

bool is_kind(const json& v, const std::string& kind) {
  if (kind == "str") return v.is_string();
  if (kind == "int")  // a 64-bit signed integer (bools are not numbers in nlohmann), as Python's reader checks
    return v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX));
  if (kind == "dict") return v.is_object();
  if (kind == "list") return v.is_array();
  if (kind == "bool") return v.is_boolean();
  return false;
}

// obj[key] checked to be of `kind`; nullptr when optional and missing/null.
const json* field(const json& obj, const std::string& key, const std::string& kind, const std::string& where, bool optional = false) {
  auto it = obj.find(key);
  if (it == obj.end() || (optional && it->is_null())) {
    if (optional) return nullptr;
    throw ManifestError("manifest field " + where + key + " is missing", "a " + kind, "nothing");
  }
  if (!is_kind(*it, kind)) throw ManifestError("manifest field " + where + key + " has the wrong type", kind, kind_of(*it));
  return &*it;
}

std::string str_field(const json& obj, const std::string& key, const std::string& where) {
  return field(obj, key, "str", where)->get<std::string>();
}

void no_unknown(const json& obj, const std::set<std::string>& allowed, const std::string& where) {
  std::vector<std::string> unknown;
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (!allowed.count(it.key())) unknown.push_back(it.key());
  if (!unknown.empty()) {
    json a = allowed, u = unknown;
    throw ManifestError("manifest " + (where.empty() ? std::string("top level") : where) + " has unknown fields", "only " + a.dump(), u.dump());
  }
}

std::vector<Dim> parse_shape(const json& value, const std::string& where) {
  std::vector<Dim> dims;
  for (const auto& d : value) {
    if (d.is_number_integer() && d.get<int64_t>() >= 0) {
      dims.push_back({d.get<int64_t>(), ""});
    } else if (d.is_string() && !d.get<std::string>().empty()) {
      dims.push_back({-1, d.get<std::string>()});
    } else {
      throw ManifestError("manifest field " + where + " is not a shape", "a list of non-negative ints or dim names", value.dump());
    }
  }
  return dims;
}

DType parse_dtype(const json& obj, const std::string& where) {
  const std::string name = str_field(obj, "dtype", where + ".");
  try {
    return dtype_from_name(name);
  } catch (const ManifestError& e) {
    throw ManifestError("manifest field " + where + ".dtype has an unknown dtype", e.expected(), name);
  }
}

const json& objects(const json& data, const std::string& key, const std::string& where = "") {
  const json& items = *field(data, key, "list", where);
  for (std::size_t i = 0; i < items.size(); ++i)
    if (!items[i].is_object())
      throw ManifestError("manifest field " + where + key + "[" + std::to_string(i) + "] is not an object", "object", kind_of(items[i]));
  return items;
}

TensorSpec parse_tensor(const json& obj, const std::string& where) {
  if (!obj.is_object()) throw ManifestError("manifest field " + where + " is not an object", "object", kind_of(obj));
  no_unknown(obj, {"name", "dtype", "shape"}, where);
  TensorSpec t;
  t.name = str_field(obj, "name", where + ".");
  t.dtype = parse_dtype(obj, where);
  t.shape = parse_shape(*field(obj, "shape", "list", where + "."), where + ".shape");
  return t;
}

GraphSpec parse_graph(const json& g, const std::string& where) {
  no_unknown(g, {"name", "file", "role", "inputs", "outputs", "consumes"}, where);
  GraphSpec spec;
  spec.name = str_field(g, "name", where + ".");
  spec.file = str_field(g, "file", where + ".");
  spec.role = str_field(g, "role", where + ".");
  const json& inputs = objects(g, "inputs", where + ".");
  for (std::size_t i = 0; i < inputs.size(); ++i) spec.inputs.push_back(parse_tensor(inputs[i], where + ".inputs[" + std::to_string(i) + "]"));
  const json& outputs = objects(g, "outputs", where + ".");
  for (std::size_t i = 0; i < outputs.size(); ++i) spec.outputs.push_back(parse_tensor(outputs[i], where + ".outputs[" + std::to_string(i) + "]"));
  auto it = g.find("consumes");
  if (it != g.end() && !it->is_null()) {
    bool ok = it->is_object();
    if (ok)
      for (auto c = it->begin(); c != it->end(); ++c) ok = ok && c.value().is_string();
    if (!ok) throw ManifestError("manifest field " + where + ".consumes is not a map of input name to graph name", "{str: str}", it->dump());
    for (auto c = it->begin(); c != it->end(); ++c) spec.consumes[c.key()] = c.value().get<std::string>();
  }
  return spec;
}

// A carried tensor's shape (state, decode cache): the batch axis first, fixed dims after; returns those dims.
Shape dims_after_batch(const std::vector<Dim>& dims, const json& shape, const std::string& where) {
  bool ok = !dims.empty() && dims[0].name == "batch";
  for (std::size_t i = 1; ok && i < dims.size(); ++i) ok = dims[i].fixed();
  if (!ok) throw ManifestError("manifest field " + where + ".shape must have the batch axis first and fixed dims after", "[\"batch\", int, ...]", shape.dump());
  Shape out;
  for (std::size_t i = 1; i < dims.size(); ++i) out.push_back(dims[i].size);
  return out;
}

StateSpec parse_state(const json& s, const std::string& where) {
  no_unknown(s, {"name", "shape", "dtype", "precision", "input", "output", "graph"}, where);
  StateSpec spec;
  spec.name = str_field(s, "name", where + ".");
  const json& shape = *field(s, "shape", "list", where + ".");
  std::vector<Dim> dims = parse_shape(shape, where + ".shape");
  spec.dtype = parse_dtype(s, where);
  spec.precision = str_field(s, "precision", where + ".");
  spec.input = str_field(s, "input", where + ".");
  spec.output = str_field(s, "output", where + ".");
  spec.graph = str_field(s, "graph", where + ".");
  spec.dims = dims_after_batch(dims, shape, where);
  if (spec.input == spec.output) throw ManifestError("state '" + spec.name + "' uses one tensor as input and output", "distinct names", spec.input);
  return spec;
}

// segment_axis is where the "segment" dim is (none when the output has none; in a package of
// one fixed segment length, a dim of that length may be it): pools cut each row's output to its
// length along it, so an edited axis must not slice another dim. An axis outside the output's
// dims is refused as it is read (raw, so 2^32+1 is not taken for 1).
void check_segment_axis_range(const OutputSpec& o, const json* axis, const std::string& where) {
  if (!axis) return;
  const bool in_range = !(axis->is_number_unsigned() && axis->get<uint64_t>() > uint64_t(INT64_MAX)) && axis->get<int64_t>() >= 0 &&
                        axis->get<int64_t>() < static_cast<int64_t>(o.shape.size());
  if (!in_range) throw ManifestError("manifest field " + where + ".segment_axis does not point at the output's segment dim", "an axis of the output", axis->dump());
}

void check_segment_axis(const OutputSpec& o, const Manifest& m, const std::string& where) {
  int want = -1;
  for (std::size_t i = 0; i < o.shape.size() && want < 0; ++i)
    if (o.shape[i].name == "segment") want = static_cast<int>(i);
  const int axis = o.segment_axis ? *o.segment_axis : -1;
  const bool fixed = want < 0 && axis >= 1 && o.shape[axis].fixed() && m.segment_min == m.segment_max && o.shape[axis].size == m.segment_max;
  if (axis != want && !fixed)
    throw ManifestError("manifest field " + where + ".segment_axis does not point at the output's segment dim", want < 0 ? "null" : std::to_string(want),
                        axis < 0 ? "null" : std::to_string(axis));
}

OutputSpec parse_output(const json& o, const std::string& where) {
  no_unknown(o, {"name", "dtype", "shape", "segment_axis", "graph"}, where);
  OutputSpec spec;
  spec.name = str_field(o, "name", where + ".");
  spec.dtype = parse_dtype(o, where);
  spec.shape = parse_shape(*field(o, "shape", "list", where + "."), where + ".shape");
  const json* axis = field(o, "segment_axis", "int", where + ".", true);
  spec.graph = str_field(o, "graph", where + ".");
  check_segment_axis_range(spec, axis, where);
  if (axis) spec.segment_axis = axis->get<int>();  // an axis of the output once checked
  return spec;
}

bool is_integer(DType d) { return d == DType::Int64 || d == DType::Int32 || d == DType::Int8 || d == DType::UInt8; }

InputSpec parse_input(const json& o, const std::string& where) {
  if (!o.is_object()) throw ManifestError("manifest field " + where + " is not an object", "object", kind_of(o));
  no_unknown(o, {"name", "dtype", "shape", "range", "pad"}, where);
  InputSpec spec;
  spec.name = str_field(o, "name", where + ".");
  spec.dtype = parse_dtype(o, where);
  const json& shape = *field(o, "shape", "list", where + ".");
  spec.shape = parse_shape(shape, where + ".shape");
  if (spec.name == "tokens" || spec.name == "lengths" || spec.name == "reset" || spec.name.rfind("state_in.", 0) == 0 || spec.name.rfind("state_out.", 0) == 0)
    throw ManifestError("manifest field " + where + ".name is reserved", "a name other than tokens/lengths/reset/state_*", spec.name);
  bool ok = !spec.shape.empty() && spec.shape[0].name == "batch";
  for (std::size_t i = 1; ok && i < spec.shape.size(); ++i) ok = spec.shape[i].name == "segment" || (spec.shape[i].fixed() && spec.shape[i].size >= 1);
  if (!ok) throw ManifestError("manifest field " + where + ".shape must be the batch axis, then fixed dims or \"segment\"", "[\"batch\", int | \"segment\", ...]", shape.dump());
  const bool integer = is_integer(spec.dtype);
  const json* range = field(o, "range", "list", where + ".", true);
  if (range != nullptr) {
    if (range->size() != 2 || !(*range)[0].is_number_integer() || !(*range)[1].is_number_integer() || (*range)[0].get<int64_t>() >= (*range)[1].get<int64_t>())
      throw ManifestError("manifest field " + where + ".range must be [low, high) of ints", "[low, high] with low < high", range->dump());
    spec.range = std::make_pair((*range)[0].get<int64_t>(), (*range)[1].get<int64_t>());
  }
  if (integer && !spec.range) throw ManifestError("manifest field " + where + ".range must be [low, high) of ints", "[low, high] with low < high", "null");
  auto pad = o.find("pad");
  if (pad != o.end()) {
    if (!pad->is_number() || pad->is_boolean()) throw ManifestError("manifest field " + where + ".pad is not a value of the input", "a number", pad->dump());
    if (integer && (!pad->is_number_integer() || pad->get<int64_t>() < spec.range->first || pad->get<int64_t>() >= spec.range->second))
      throw ManifestError("manifest field " + where + ".pad is not a value of the input", "a number in " + range->dump(), pad->dump());
    spec.pad = pad->get<double>();
  }
  return spec;
}

CacheSpec parse_cache(const json& c, const std::string& where) {
  no_unknown(c, {"name", "shape", "dtype", "input", "output", "graph"}, where);
  CacheSpec spec;
  spec.name = str_field(c, "name", where + ".");
  const json& shape = *field(c, "shape", "list", where + ".");
  std::vector<Dim> dims = parse_shape(shape, where + ".shape");
  spec.dtype = parse_dtype(c, where);
  spec.input = str_field(c, "input", where + ".");
  spec.output = str_field(c, "output", where + ".");
  spec.graph = str_field(c, "graph", where + ".");
  spec.dims = dims_after_batch(dims, shape, where);
  if (spec.input != "cache_in." + spec.name || spec.output != "cache_out." + spec.name)
    throw ManifestError("manifest field " + where + " names its tensors wrongly", json({"cache_in." + spec.name, "cache_out." + spec.name}).dump(),
                        json({spec.input, spec.output}).dump());
  if (spec.graph != "decode_open" && spec.graph != "decode")
    throw ManifestError("manifest field " + where + ".graph is not a decode graph", "[\"decode_open\", \"decode\"]", spec.graph);
  return spec;
}

DecodeSpec parse_decode(const json& d) {
  no_unknown(d, {"capacity", "graphs", "cache"}, "decode");
  DecodeSpec spec;
  spec.capacity = field(d, "capacity", "int", "decode.")->get<int64_t>();
  const json& graphs = objects(d, "graphs", "decode.");
  std::vector<GraphSpec> parsed;
  for (std::size_t i = 0; i < graphs.size(); ++i) parsed.push_back(parse_graph(graphs[i], "decode.graphs[" + std::to_string(i) + "]"));
  const bool named = parsed.size() == 2 && parsed[0].name == "decode_open" && parsed[0].role == "decode_open" && parsed[1].name == "decode" && parsed[1].role == "decode";
  if (!named) {
    json actual = json::array();
    for (const auto& g : parsed) actual.push_back(g.name + " (role " + g.role + ")");
    throw ManifestError("manifest decode.graphs are not the decode graphs", "[\"decode_open (role decode_open)\", \"decode (role decode)\"]", actual.dump());
  }
  spec.open = parsed[0];
  spec.decode = parsed[1];
  const json& cache = objects(d, "cache", "decode.");
  for (std::size_t i = 0; i < cache.size(); ++i) spec.cache.push_back(parse_cache(cache[i], "decode.cache[" + std::to_string(i) + "]"));
  return spec;
}

std::vector<std::string> names_of(const std::vector<TensorSpec>& ts) {
  std::vector<std::string> names;
  for (const auto& t : ts) names.push_back(t.name);
  return names;
}

// The decode graphs take and give exactly what "decode" says, in order; their files are listed
// (memx/package/manifest.py _check_decode).
void check_decode(const Manifest& m) {
  if (!m.decode) return;
  const DecodeSpec& d = *m.decode;
  if (d.capacity < 1 || d.capacity > m.segment_max)
    throw ManifestError("manifest decode.capacity is out of range", "1.." + std::to_string(m.segment_max) + " (segment.max)", std::to_string(d.capacity));
  std::set<std::string> seen;
  for (const auto& c : d.cache)
    if (!seen.insert(c.name).second) throw ManifestError("manifest decode cache names are not unique", "unique names", c.name);
  std::set<std::string> state_inputs;
  for (const auto& s : m.state) state_inputs.insert(s.input);
  std::vector<std::string> open_in = names_of(d.open.inputs), open_in_want, open_out_want, dec_in_want = {"tokens", "lengths", "position"}, dec_out_want = {"logits"};
  for (const auto& n : open_in)
    if (n == "reset" || state_inputs.count(n)) open_in_want.push_back(n);
  for (const auto& c : d.cache) {
    dec_in_want.push_back(c.input);
    (c.graph == "decode_open" ? open_out_want : dec_out_want).push_back(c.output);
  }
  const std::vector<std::pair<std::string, std::pair<std::vector<std::string>, std::vector<std::string>>>> wants = {
      {"decode_open inputs", {open_in, open_in_want}},
      {"decode_open outputs", {names_of(d.open.outputs), open_out_want}},
      {"decode inputs", {names_of(d.decode.inputs), dec_in_want}},
      {"decode outputs", {names_of(d.decode.outputs), dec_out_want}},
  };
  for (const auto& [what, pair] : wants)
    if (pair.first != pair.second)
      throw ManifestError("manifest decode graph " + what + " differ from its cache and the step's state", json(pair.second).dump(), json(pair.first).dump());
  if (std::find(open_in.begin(), open_in.end(), "reset") == open_in.end())
    throw ManifestError("manifest decode_open graph does not take reset", "reset among its inputs", json(open_in).dump());
  if (std::none_of(m.outputs.begin(), m.outputs.end(), [](const OutputSpec& o) { return o.name == "logits"; }))
    throw ManifestError("a package with decode graphs has no logits output", "an output named logits", "none");
  for (const GraphSpec* g : {&d.open, &d.decode})
    if (!m.files.count(g->file)) throw ManifestError("graph '" + g->name + "' file is not listed in files", g->file, "not listed");
}

// What a snapshot is bound to, as memx/package/manifest.py's Manifest.model_id computes it: the
// sha256 of json.dumps({"config", "family", "state": [[name, shape, dtype], ...], "weights"}, sort_keys=True).
std::string computed_model_id(const json& data) {
  json state = json::array();
  for (const auto& s : data["state"]) state.push_back(json::array({s["name"], s["shape"], s["dtype"]}));
  const json& provenance = data["provenance"];
  const json ident = {{"config", data["config"]}, {"family", data["family"]}, {"state", state},
                      {"weights", provenance.contains("weights_sha256") ? provenance["weights_sha256"] : json(nullptr)}};
  const std::string text = detail::python_dumps(ident);
  return sha256_hex(text.data(), text.size());
}

// the model id: the stored one (absent in manifests written before it was stored) must be a
// sha256 and the one the manifest's family, config, state schema and weights give
std::string parse_model_id(const json& data) {
  const std::string computed = computed_model_id(data);
  const json* id = field(data, "model_id", "str", "", true);
  if (id == nullptr) return computed;
  const std::string value = id->get<std::string>();
  const bool hex = value.size() == 64 && std::all_of(value.begin(), value.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  if (!hex) throw ManifestError("manifest model_id is not a sha256", "64 lowercase hex digits", value);
  if (value != computed)
    throw ManifestError("manifest model_id does not match its family, config, state schema and weights", computed.substr(0, 16), value.substr(0, 16),
                        "the manifest was edited after export: re-export the package");
  return value;
}

// fp32 and the precisions of the registered quantization methods, generated from them
const std::set<std::string> kPrecisions =
#include "precisions.inc"
    ;

void check_pipeline(const Manifest& m) {
  std::vector<std::string> outside_list = m.step_inputs();
  std::set<std::string> outside(outside_list.begin(), outside_list.end());
  std::map<std::string, std::set<std::string>> produced;
  for (const auto& g : m.graphs) {
    std::set<std::string> input_names;
    for (const auto& t : g.inputs) {
      input_names.insert(t.name);
      auto source = g.consumes.find(t.name);
      if (source == g.consumes.end()) {
        if (!outside.count(t.name))
          throw ManifestError("graph '" + g.name + "' input '" + t.name + "' has no source", "a step input " + json(outside).dump() + " or an entry in consumes", t.name);
      } else if (!produced[source->second].count(t.name)) {
        throw ManifestError("graph '" + g.name + "' consumes '" + t.name + "' from '" + source->second + "', which does not produce it earlier",
                            "an output of an earlier graph", source->second);
      }
    }
    for (const auto& [name, _] : g.consumes)
      if (!input_names.count(name)) throw ManifestError("graph '" + g.name + "' consumes names that are not its inputs", json(input_names).dump(), name);
    for (const auto& t : g.outputs) produced[g.name].insert(t.name);
  }
}

void check_consistency(const Manifest& m) {
  if (!kPrecisions.count(m.precision)) throw ManifestError("manifest precision is unknown", json(kPrecisions).dump(), m.precision);
  if (m.graphs.empty()) throw ManifestError("manifest lists no graphs", "at least one graph", "0");
  std::set<std::string> input_names;
  for (const auto& in : m.inputs) {
    if (!input_names.insert(in.name).second) throw ManifestError("manifest extra input names are not unique", "unique names", in.name);
    bool fed = false, same = true;
    for (const auto& g : m.graphs)
      for (const auto& t : g.inputs)
        if (t.name == in.name && !g.consumes.count(t.name)) {
          fed = true;
          bool dims = t.shape.size() == in.shape.size();
          for (std::size_t i = 0; dims && i < t.shape.size(); ++i) dims = t.shape[i].name == in.shape[i].name && t.shape[i].size == in.shape[i].size;
          same = same && dims && t.dtype == in.dtype;
        }
    if (!fed || !same) throw ManifestError("extra input '" + in.name + "' is not fed to a graph as declared", "a graph input of its dtype and shape", fed ? "another dtype or shape" : "no graph takes it");
  }
  std::map<std::string, const GraphSpec*> graphs;
  for (const auto& g : m.graphs) graphs[g.name] = &g;
  if (graphs.size() != m.graphs.size()) throw ManifestError("manifest graph names are not unique", "unique names", std::to_string(m.graphs.size()) + " graphs with " + std::to_string(graphs.size()) + " names");
  auto has = [](const std::vector<TensorSpec>& ts, const std::string& name) {
    return std::any_of(ts.begin(), ts.end(), [&](const TensorSpec& t) { return t.name == name; });
  };
  for (const auto& s : m.state) {
    auto g = graphs.find(s.graph);
    if (g == graphs.end()) throw ManifestError("state '" + s.name + "' names an unknown graph", "a graph of the package", s.graph);
    bool fed = std::any_of(m.graphs.begin(), m.graphs.end(), [&](const GraphSpec& h) { return has(h.inputs, s.input); });
    if (!fed || !has(g->second->outputs, s.output))
      throw ManifestError("state '" + s.name + "' is not wired to graph '" + s.graph + "'", "inputs/outputs '" + s.input + "'/'" + s.output + "'", "not found");
  }
  check_pipeline(m);
  for (std::size_t i = 0; i < m.outputs.size(); ++i) {
    const OutputSpec& o = m.outputs[i];
    auto g = graphs.find(o.graph);
    if (g == graphs.end() || !has(g->second->outputs, o.name)) throw ManifestError("output '" + o.name + "' is not an output of graph '" + o.graph + "'", "an output of that graph", o.graph);
    check_segment_axis(o, m, "outputs[" + std::to_string(i) + "]");
  }
  for (const auto& g : m.graphs)
    if (!m.files.count(g.file)) throw ManifestError("graph '" + g.name + "' file is not listed in files", g.file, "not listed");
  check_decode(m);
}

// A CPU build's graph file: onnxruntime-cpu/..., no empty, '.' or '..' segment, no backslash,
// not one of the graphs as exported.
bool is_build_file(const std::string& file, const Manifest& m) {
  const std::string dir = "onnxruntime-cpu/";
  if (file.rfind(dir, 0) != 0 || file.size() == dir.size() || file.find('\\') != std::string::npos) return false;
  std::stringstream rest(file.substr(dir.size()));
  std::string part;
  while (std::getline(rest, part, '/'))
    if (part.empty() || part == "." || part == "..") return false;
  if (file.back() == '/') return false;
  for (const auto& g : m.graphs)
    if (g.file == file) return false;
  if (m.decode && (m.decode->open.file == file || m.decode->decode.file == file)) return false;
  return true;
}

// onnxruntime_cpu: {"graphs": {graph name: file}, "onnxruntime": str, "passes": {...}, "check": {...}
// (optional)}; every graph named is one of the package's (step or decode), its file listed.
std::map<std::string, std::string> parse_cpu_build(const json& b, const Manifest& m) {
  no_unknown(b, {"graphs", "onnxruntime", "passes", "check"}, "onnxruntime_cpu");
  const json& graphs = *field(b, "graphs", "dict", "onnxruntime_cpu.");
  field(b, "onnxruntime", "str", "onnxruntime_cpu.");
  const json& passes = *field(b, "passes", "dict", "onnxruntime_cpu.");
  field(b, "check", "dict", "onnxruntime_cpu.", true);
  for (auto it = passes.begin(); it != passes.end(); ++it) {
    bool ok = it->is_object();
    if (ok)
      for (const auto& v : *it) ok = ok && is_kind(v, "int");
    if (!ok) throw ManifestError("manifest field onnxruntime_cpu.passes['" + it.key() + "'] is not a map of pass name to rewrites", "{str: int}", it->dump());
  }
  std::vector<std::string> known;
  for (const auto& g : m.graphs) known.push_back(g.name);
  if (m.decode) known.insert(known.end(), {m.decode->open.name, m.decode->decode.name});
  if (graphs.empty()) throw ManifestError("manifest onnxruntime_cpu.graphs is empty", "at least one graph", "{}");
  std::map<std::string, std::string> out;
  for (auto it = graphs.begin(); it != graphs.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) == known.end()) {
      std::string names;
      for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
      throw ManifestError("manifest onnxruntime_cpu names an unknown graph '" + it.key() + "'", "one of [" + names + "]", it.key());
    }
    if (!it->is_string() || !m.files.count(it->get<std::string>()))
      throw ManifestError("onnxruntime_cpu graph '" + it.key() + "' file is not listed in files", "a file listed in files", it->dump());
    const std::string file = it->get<std::string>();
    if (!is_build_file(file, m))
      throw ManifestError("onnxruntime_cpu graph '" + it.key() + "' file is not a file of the build",
                          "a path under onnxruntime-cpu/ (no '.' or '..'), not a graph as exported", file);
    for (const auto& [other, f] : out)
      if (f == file) throw ManifestError("manifest onnxruntime_cpu gives two graphs the same file", "one file per graph", other + ", " + it.key() + ": " + file);
    out[it.key()] = file;
  }
  return out;
}

const std::set<std::string> kTopLevel = {"format",     "format_version", "family",     "preset",     "config", "vocab_size", "segment",
                                         "graphs",     "state",          "outputs",    "precision",  "provenance", "files", "reference",
                                         "custom_ops", "validation",     "causal",     "task",       "quantization", "engines",
                                         "model_id",   "inputs",         "decode",     "onnxruntime_cpu"};

}  // namespace

Manifest Manifest::parse(const std::string& json_text, const std::string& source) {
  // what Python's json refuses, nlohmann would take: a byte-order mark, NUL bytes (an early end)
  if (json_text.rfind("\xEF\xBB\xBF", 0) == 0) throw ManifestError(source + " is not valid JSON (it starts with a UTF-8 byte-order mark)");
  if (json_text.find('\0') != std::string::npos)
    throw ManifestError(source + " is not valid JSON (a NUL byte at offset " + std::to_string(json_text.find('\0')) + ")");
  const int depth = detail::json_depth(json_text.begin(), json_text.end());
  if (depth > detail::kMaxJsonDepth)
    throw ManifestError(source + " is nested too deeply", "at most " + std::to_string(detail::kMaxJsonDepth) + " levels of arrays and objects", std::to_string(depth));
  json data;
  try {
    data = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw ManifestError(source + " is not valid JSON (byte " + std::to_string(e.byte) + ")");
  } catch (const json::exception& e) {  // out_of_range.406: a number that overflows a double (1e400), found by tests/fuzz
    throw ManifestError(source + " is not valid JSON (" + e.what() + ")");
  }
  if (!data.is_object()) throw ManifestError("manifest is not a JSON object", "object", kind_of(data));
  auto fmt = data.find("format");
  if (fmt == data.end() || !fmt->is_string() || fmt->get<std::string>() != kManifestFormat)
    throw ManifestError("not a memx manifest", std::string("format '") + kManifestFormat + "'", fmt == data.end() ? "None" : fmt->dump());
  int64_t version = field(data, "format_version", "int", "")->get<int64_t>();
  if (version != kManifestFormatVersion)
    throw ManifestVersionError("unsupported manifest format_version", std::to_string(kManifestFormatVersion), std::to_string(version),
                               version > kManifestFormatVersion ? "re-export the package with this memx, or upgrade memx" : "re-export the package");
  no_unknown(data, kTopLevel, "");
  const json& segment = *field(data, "segment", "dict", "");
  Manifest m;
  m.segment_min = field(segment, "min", "int", "segment.")->get<int64_t>();
  m.segment_max = field(segment, "max", "int", "segment.")->get<int64_t>();
  if (!(1 <= m.segment_min && m.segment_min <= m.segment_max)) throw ManifestError("manifest segment limits are inconsistent", "1 <= min <= max", segment.dump());
  m.vocab_size = field(data, "vocab_size", "int", "")->get<int64_t>();
  if (m.vocab_size < 1) throw ManifestError("manifest vocab_size must be positive", ">= 1", std::to_string(m.vocab_size));
  m.family = str_field(data, "family", "");
  if (const json* p = field(data, "preset", "str", "", true)) m.preset = p->get<std::string>();
  field(data, "config", "dict", "");
  const json& graphs = objects(data, "graphs");
  for (std::size_t i = 0; i < graphs.size(); ++i) m.graphs.push_back(parse_graph(graphs[i], "graphs[" + std::to_string(i) + "]"));
  const json& state = objects(data, "state");
  for (std::size_t i = 0; i < state.size(); ++i) m.state.push_back(parse_state(state[i], "state[" + std::to_string(i) + "]"));
  const json& outputs = objects(data, "outputs");
  for (std::size_t i = 0; i < outputs.size(); ++i) m.outputs.push_back(parse_output(outputs[i], "outputs[" + std::to_string(i) + "]"));
  if (const json* inputs = field(data, "inputs", "list", "", true))
    for (std::size_t i = 0; i < inputs->size(); ++i) m.inputs.push_back(parse_input((*inputs)[i], "inputs[" + std::to_string(i) + "]"));
  m.precision = str_field(data, "precision", "");
  const json& provenance = *field(data, "provenance", "dict", "");
  auto w = provenance.find("weights_sha256");
  if (w != provenance.end() && w->is_string()) m.weights_sha256 = w->get<std::string>();
  const json& files = *field(data, "files", "dict", "");
  for (auto it = files.begin(); it != files.end(); ++it) {
    const std::string where = "files['" + it.key() + "']";
    if (!it->is_object()) throw ManifestError("manifest field " + where + " is not an object", "object", kind_of(*it));
    no_unknown(*it, {"bytes", "sha256"}, where);
    m.files[it.key()] = FileEntry{field(*it, "bytes", "int", where + ".")->get<int64_t>(), str_field(*it, "sha256", where + ".")};
  }
  field(data, "reference", "dict", "", true);
  field(data, "validation", "dict", "", true);
  field(data, "quantization", "dict", "", true);
  field(data, "engines", "list", "", true);  // TensorRT plans: not run by libmemx (ONNX Runtime), checked like any listed file
  if (const json* ops = field(data, "custom_ops", "list", "", true))
    for (const auto& op : *ops)
      if (op.is_object() && op.contains("domain") && op["domain"].is_string()) m.custom_op_domains.push_back(op["domain"].get<std::string>());
  if (const json* c = field(data, "causal", "bool", "", true)) m.causal = c->get<bool>();
  if (const json* t = field(data, "task", "str", "", true)) m.task = t->get<std::string>();
  if (const json* d = field(data, "decode", "dict", "", true)) m.decode = parse_decode(*d);
  check_consistency(m);
  if (const json* b = field(data, "onnxruntime_cpu", "dict", "", true)) m.cpu_build_graphs = parse_cpu_build(*b, m);
  m.model_id = parse_model_id(data);
  return m;
}

Manifest Manifest::load(const std::string& package_dir) {
  namespace fs = std::filesystem;
  const std::string path = package_dir + "/" + kManifestFile;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);  // follows links
  if (!fs::exists(st) && !fs::is_symlink(fs::symlink_status(path, ec))) throw ManifestError(std::string("package has no ") + kManifestFile, path, "missing file");
  if (!fs::is_regular_file(st)) {  // a FIFO would block the read
    const char* kind = fs::is_directory(st) ? "a directory" : fs::is_fifo(st) ? "a FIFO" : fs::is_socket(st) ? "a socket" : !fs::exists(st) ? "a dangling link" : "a device or other special file";
    throw ManifestError(std::string(kManifestFile) + " is not a regular file", "a regular file", kind);
  }
  const std::uintmax_t size = fs::file_size(path, ec);
  if (!ec && size > detail::kMaxManifestBytes)
    throw ManifestError(std::string(kManifestFile) + " is too large", "at most " + std::to_string(detail::kMaxManifestBytes) + " bytes", std::to_string(size) + " bytes");
  const fs::path real = fs::weakly_canonical(path, ec), root = fs::weakly_canonical(package_dir, ec);
  const auto rel = real.lexically_relative(root);
  if (rel.empty() || *rel.begin() == "..")
    throw UnsafePathError(std::string(kManifestFile) + " is a link to a file outside the package", "a file inside " + package_dir, real.string());
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ManifestError(std::string("package has no ") + kManifestFile, path, "missing file");
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

const StateSpec* Manifest::find_state(const std::string& name) const {
  for (const auto& s : state)
    if (s.name == name) return &s;
  return nullptr;
}

std::vector<std::string> Manifest::step_inputs() const {
  std::vector<std::string> names = {"tokens", "lengths", "reset"};
  for (const auto& in : inputs) names.push_back(in.name);
  for (const auto& s : state) names.push_back(s.input);
  return names;
}

}  // namespace memx
