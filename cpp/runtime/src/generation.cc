// Generation in libmemx, the twin of memx/runtimes/generation.py: tokens appended inside a
// segment through the decode graphs, the memory written by the step graphs when a segment is
// full. A row at the start of a segment with a whole segment to consume runs it through the
// step graphs; other rows go through decode (decode_open first at a segment's start). Every
// append works on copies and commits only at the end: a failed one leaves the stream as it was.
#include <algorithm>
#include <cstring>

#include "memx/runtime.hpp"
#include "memx/sampling.hpp"
#include "runtime_impl.hpp"
#include "stream_impl.hpp"

namespace memx {
namespace detail {

Tensor take_rows(const Tensor& t, const std::vector<int64_t>& rows) {
  Shape shape = t.shape;
  shape[0] = static_cast<int64_t>(rows.size());
  Tensor out(t.dtype, shape);
  const std::size_t row = t.shape[0] ? t.nbytes() / static_cast<std::size_t>(t.shape[0]) : 0;
  for (std::size_t i = 0; i < rows.size(); ++i) std::memcpy(out.bytes.data() + i * row, t.bytes.data() + rows[i] * row, row);
  return out;
}

void put_rows(Tensor& dst, const std::vector<int64_t>& rows, const Tensor& part) {
  const std::size_t row = dst.shape[0] ? dst.nbytes() / static_cast<std::size_t>(dst.shape[0]) : 0;
  for (std::size_t i = 0; i < rows.size(); ++i) std::memcpy(dst.bytes.data() + rows[i] * row, part.bytes.data() + i * row, row);
}

const DecodeSpec& decode_spec(const Manifest& m) {
  if (!m.decode)
    throw BackendUnavailableError("this " + m.family + " package has no decode graphs, so it cannot generate token by token", "a package with decode graphs (memx inspect shows them)",
                                  "none", "re-export a causal model with this memx (rmt decoder, kvcache, gmat causal, infformer)");
  return *m.decode;
}

std::map<std::string, Tensor>& Rows::states() {
  if (!host) host = load();
  return *host;
}

namespace {

using SharedTensor = std::shared_ptr<const Tensor>;

// base with rows replaced by part's, as a new tensor unless part covers every row
SharedTensor put_shared(const SharedTensor& base, const std::vector<int64_t>& rows, Tensor part) {
  bool every = static_cast<int64_t>(rows.size()) == base->shape[0];
  for (std::size_t i = 0; every && i < rows.size(); ++i) every = rows[i] == static_cast<int64_t>(i);
  if (every) return std::make_shared<const Tensor>(std::move(part));
  Tensor copy = *base;
  put_rows(copy, rows, part);
  return std::make_shared<const Tensor>(std::move(copy));
}

Shape with_batch(int64_t batch, const Shape& dims) {
  Shape s = {batch};
  s.insert(s.end(), dims.begin(), dims.end());
  return s;
}

std::vector<int64_t> pick(const std::vector<int64_t>& v, const std::vector<int64_t>& rows) {
  std::vector<int64_t> out;
  for (int64_t r : rows) out.push_back(v[r]);
  return out;
}

std::map<std::string, Tensor> take_all(const std::map<std::string, Tensor>& m, const std::vector<int64_t>& rows) {
  std::map<std::string, Tensor> out;
  for (const auto& [k, v] : m) out.emplace(k, take_rows(v, rows));
  return out;
}

Tensor bool_tensor(const std::vector<bool>& v) {
  Tensor t(DType::Bool, {static_cast<int64_t>(v.size())});
  for (std::size_t i = 0; i < v.size(); ++i) t.bytes[i] = v[i] ? 1 : 0;
  return t;
}

Tensor int_tensor(const std::vector<int64_t>& v) {
  Tensor t(DType::Int64, {static_cast<int64_t>(v.size())});
  std::copy(v.begin(), v.end(), t.data<int64_t>());
  return t;
}

struct Engine {
  const Runtime::Impl& rt;
  const DecodeSpec& spec;

  std::map<std::string, Tensor> open(const std::vector<bool>& reset, const std::map<std::string, Tensor>& states) const {
    const Tensor rst = bool_tensor(reset);
    std::map<std::string, const Tensor*> feeds = {{"reset", &rst}};
    for (const auto& s : rt.manifest.state) feeds[s.input] = &states.at(s.name);
    std::map<std::string, Tensor> out = rt.run_decode_graph(spec.open, feeds);
    std::map<std::string, Tensor> cache;
    for (const auto& c : spec.cache)
      if (c.graph == "decode_open") cache.emplace(c.name, std::move(out.at(c.output)));
    return cache;
  }

  void step_rows(Rows& r, const std::vector<int64_t>& idx, const Tensor& tokens, const std::vector<int64_t>& lengths, bool keep_logits) const {
    std::vector<bool> reset;
    for (int64_t b : idx) reset.push_back(r.pending[b]);
    Runtime::StepResult res = run_step_host(rt, tokens, int_tensor(lengths), bool_tensor(reset), take_all(r.states(), idx));
    for (auto& [k, v] : res.states) put_rows(r.states().at(k), idx, v);
    r.states_changed = true;
    const Tensor& logits = res.outputs.at("logits");  // [k, S, V]
    const int64_t s = logits.shape[1], v = logits.shape[2];
    for (std::size_t i = 0; i < idx.size(); ++i) {
      const int64_t b = idx[i];
      r.pending[b] = false;
      r.gen.position[b] = 0;
      r.committed[b] += 1;
      if (keep_logits) {
        std::memcpy(r.gen.logits.data<float>() + b * v, logits.data<float>() + (static_cast<int64_t>(i) * s + lengths[i] - 1) * v, v * sizeof(float));
        r.gen.has_logits[b] = true;
      }
    }
  }

  void decode_rows(Rows& r, const std::vector<int64_t>& idx, const Tensor& tokens, const std::vector<int64_t>& start, const std::vector<int64_t>& take) const {
    const bool every = static_cast<int64_t>(idx.size()) == r.gen.tokens.shape[0];  // idx is then 0..B-1 (ascending, unique)
    DecodeRows part = every ? r.gen : r.gen.take(idx);
    std::vector<int64_t> opening;
    for (std::size_t i = 0; i < idx.size(); ++i)
      if (part.position[i] == 0) opening.push_back(static_cast<int64_t>(i));
    if (!opening.empty()) {  // rows starting a segment read their memory now
      const std::vector<int64_t> rows = pick(idx, opening);
      std::vector<bool> reset;
      for (int64_t b : rows) reset.push_back(r.pending[b]);
      for (auto& [k, v] : open(reset, take_all(r.states(), rows))) part.cache[k] = put_shared(part.cache.at(k), opening, std::move(v));
    }
    const int64_t n = *std::max_element(take.begin(), take.end()), total = tokens.shape[1], k = static_cast<int64_t>(idx.size());
    Tensor ids(DType::Int64, {k, n});
    for (int64_t i = 0; i < k; ++i) std::copy_n(tokens.data<int64_t>() + idx[i] * total + start[i], take[i], ids.data<int64_t>() + i * n);
    const Tensor lens = int_tensor(take), pos = int_tensor(part.position);
    std::map<std::string, const Tensor*> feeds = {{"tokens", &ids}, {"lengths", &lens}, {"position", &pos}};
    for (const auto& c : spec.cache) feeds[c.input] = part.cache.at(c.name).get();
    std::map<std::string, Tensor> out = rt.run_decode_graph(spec.decode, feeds);
    for (const auto& c : spec.cache)
      if (c.graph == "decode") part.cache[c.name] = std::make_shared<const Tensor>(std::move(out.at(c.output)));
    const Tensor& logits = out.at("logits");  // [k, n, V]
    const int64_t v = logits.shape[2], cap = part.tokens.shape[1];
    for (int64_t i = 0; i < k; ++i) {
      std::copy_n(ids.data<int64_t>() + i * n, take[i], part.tokens.data<int64_t>() + i * cap + part.position[i]);
      std::memcpy(part.logits.data<float>() + i * v, logits.data<float>() + (i * n + take[i] - 1) * v, v * sizeof(float));
      part.position[i] += take[i];
      part.has_logits[i] = true;
    }
    if (every)
      r.gen = std::move(part);
    else
      r.gen.put(idx, part);
  }

  void commit_rows(Rows& r, const std::vector<int64_t>& idx, int64_t segment_len) const {
    const Tensor buffered = take_rows(r.gen.tokens, idx);
    Tensor seg(DType::Int64, {static_cast<int64_t>(idx.size()), segment_len});
    const int64_t cap = buffered.shape[1];
    for (std::size_t i = 0; i < idx.size(); ++i) std::copy_n(buffered.data<int64_t>() + i * cap, segment_len, seg.data<int64_t>() + i * segment_len);
    step_rows(r, idx, seg, std::vector<int64_t>(idx.size(), segment_len), false);
  }

  void flush(Rows& r) const {
    std::vector<int64_t> idx;
    int64_t width = 0;
    for (int64_t b = 0; b < static_cast<int64_t>(r.gen.position.size()); ++b)
      if (r.gen.position[b] > 0) {
        idx.push_back(b);
        width = std::max(width, r.gen.position[b]);
      }
    if (idx.empty()) return;
    const Tensor buffered = take_rows(r.gen.tokens, idx);
    Tensor seg(DType::Int64, {static_cast<int64_t>(idx.size()), width});
    const int64_t cap = buffered.shape[1];
    for (std::size_t i = 0; i < idx.size(); ++i) std::copy_n(buffered.data<int64_t>() + i * cap, width, seg.data<int64_t>() + i * width);
    step_rows(r, idx, seg, pick(r.gen.position, idx), false);
  }

  // append counts[b] tokens of tokens[b] ([B, n]) to each row of r
  void append(Rows& r, const Tensor& tokens, const std::vector<int64_t>& counts, int64_t segment_len) const {
    const int64_t batch = static_cast<int64_t>(counts.size()), total = tokens.shape[1];
    std::vector<int64_t> done(batch, 0);
    auto left = [&](int64_t b) { return counts[b] - done[b]; };
    for (;;) {
      std::vector<int64_t> whole, part;
      for (int64_t b = 0; b < batch; ++b) {
        if (left(b) <= 0) continue;
        (r.gen.position[b] == 0 && left(b) >= segment_len ? whole : part).push_back(b);
      }
      if (whole.empty() && part.empty()) return;
      if (!whole.empty()) {  // whole segments: the step graphs give logits and memory at once
        Tensor seg(DType::Int64, {static_cast<int64_t>(whole.size()), segment_len});
        for (std::size_t i = 0; i < whole.size(); ++i)
          std::copy_n(tokens.data<int64_t>() + whole[i] * total + done[whole[i]], segment_len, seg.data<int64_t>() + i * segment_len);
        step_rows(r, whole, seg, std::vector<int64_t>(whole.size(), segment_len), true);
        for (int64_t b : whole) done[b] += segment_len;
      }
      if (!part.empty()) {
        std::vector<int64_t> start, take;
        for (int64_t b : part) {
          start.push_back(done[b]);
          take.push_back(std::min(segment_len - r.gen.position[b], left(b)));
        }
        decode_rows(r, part, tokens, start, take);
        std::vector<int64_t> full;
        for (std::size_t i = 0; i < part.size(); ++i) {
          done[part[i]] += take[i];
          if (r.gen.position[part[i]] == segment_len) full.push_back(part[i]);
        }
        if (!full.empty()) commit_rows(r, full, segment_len);
      }
    }
  }
};

}  // namespace

void append_rows(const Runtime::Impl& rt, Rows& r, const Tensor& tokens, const std::vector<int64_t>& counts, int64_t segment_len) {
  Engine{rt, decode_spec(rt.manifest)}.append(r, tokens, counts, segment_len);
}

void flush_rows(const Runtime::Impl& rt, Rows& r) { Engine{rt, decode_spec(rt.manifest)}.flush(r); }

int64_t checked_segment_len(int64_t segment_len, const Manifest& m) {
  const DecodeSpec& d = decode_spec(m);
  if (segment_len < 0 || segment_len > d.capacity)
    throw InputError("generation segment length out of range", "an int in 1.." + std::to_string(d.capacity) + " (the decode cache's capacity), or 0 for it",
                     std::to_string(segment_len));
  return segment_len ? segment_len : d.capacity;
}

void check_new_tokens(const Tensor& tokens, const Manifest& m) {
  const int64_t n = tokens.shape.back();
  if (n == 0) throw InputError("tokens is empty: nothing to append", "at least one token", "shape " + shape_str(tokens.shape));
  const int64_t* ids = tokens.data<int64_t>();
  const int64_t *lo = std::min_element(ids, ids + tokens.size()), *hi = std::max_element(ids, ids + tokens.size());
  if (*lo >= 0 && *hi < m.vocab_size) return;
  const int64_t* bad = *lo < 0 ? lo : hi;  // the first place of the smallest (negative) or largest id
  const int64_t at = bad - ids;
  throw TokenRangeError("token id outside the vocabulary", "0.." + std::to_string(m.vocab_size - 1),
                        std::to_string(*bad) + " at [row, position] [" + std::to_string(at / n) + ", " + std::to_string(at % n) + "]");
}

void check_generate_args(const Manifest& m, int64_t max_new_tokens, const SamplingOptions& options, const std::vector<int64_t>& stop_tokens) {
  if (max_new_tokens < 0) throw InputError("max_new_tokens must be an int >= 0", ">= 0", std::to_string(max_new_tokens));
  options.check();
  for (int64_t t : stop_tokens)
    if (t < 0 || t >= m.vocab_size) throw InputError("stop token outside the vocabulary", "ints in 0.." + std::to_string(m.vocab_size - 1), std::to_string(t));
}

DecodeRows DecodeRows::stack(const std::vector<const DecodeRows*>& parts) {
  auto cat = [&](auto get) {
    std::vector<const Tensor*> tensors;
    for (const DecodeRows* p : parts) tensors.push_back(&get(*p));
    return concat_rows(tensors);
  };
  DecodeRows out;
  for (const auto& [name, _] : parts.front()->cache)
    out.cache.emplace(name, std::make_shared<const Tensor>(cat([&](const DecodeRows& p) -> const Tensor& { return *p.cache.at(name); })));
  out.tokens = cat([](const DecodeRows& p) -> const Tensor& { return p.tokens; });
  out.logits = cat([](const DecodeRows& p) -> const Tensor& { return p.logits; });
  for (const DecodeRows* p : parts) {
    out.position.insert(out.position.end(), p->position.begin(), p->position.end());
    out.has_logits.insert(out.has_logits.end(), p->has_logits.begin(), p->has_logits.end());
  }
  return out;
}

DecodeRows DecodeRows::empty(const Manifest& m, int64_t batch) {
  const DecodeSpec& d = decode_spec(m);
  DecodeRows rows;
  for (const auto& c : d.cache) rows.cache.emplace(c.name, std::make_shared<const Tensor>(Tensor(c.dtype, with_batch(batch, c.dims))));
  rows.tokens = Tensor(DType::Int64, {batch, d.capacity});
  rows.position.assign(batch, 0);
  rows.logits = Tensor(DType::Float32, {batch, m.vocab_size});
  rows.has_logits.assign(batch, false);
  return rows;
}

std::vector<StateLayout> decode_schema(const Manifest& m) {
  const DecodeSpec& d = decode_spec(m);
  std::vector<StateLayout> schema = {{"decode.position", DType::Int64, {}}, {"decode.tokens", DType::Int64, {d.capacity}},
                                     {"decode.logits", DType::Float32, {m.vocab_size}}, {"decode.has_logits", DType::Bool, {}}};
  for (const auto& c : d.cache) schema.push_back({"decode.cache." + c.name, c.dtype, c.dims});
  return schema;
}

std::optional<DecodeRows> DecodeRows::from_snapshot(const SnapshotData& data, const Manifest& m) {
  if (!data.states.count("decode.position")) return std::nullopt;
  DecodeRows rows;
  for (const auto& c : decode_spec(m).cache) rows.cache.emplace(c.name, std::make_shared<const Tensor>(data.states.at("decode.cache." + c.name)));
  rows.tokens = data.states.at("decode.tokens");
  const Tensor& pos = data.states.at("decode.position");
  rows.position.assign(pos.data<int64_t>(), pos.data<int64_t>() + pos.size());
  rows.logits = data.states.at("decode.logits");
  const Tensor& has = data.states.at("decode.has_logits");
  for (int64_t i = 0; i < has.size(); ++i) rows.has_logits.push_back(has.bytes[i] != 0);
  return rows;
}

void DecodeRows::to_snapshot(SnapshotData& data) const {
  data.states.insert_or_assign("decode.position", int_tensor(position));
  data.states.insert_or_assign("decode.tokens", tokens);
  data.states.insert_or_assign("decode.logits", logits);
  data.states.insert_or_assign("decode.has_logits", bool_tensor(has_logits));
  for (const auto& [k, v] : cache) data.states.insert_or_assign("decode.cache." + k, *v);
}

DecodeRows DecodeRows::take(const std::vector<int64_t>& rows) const {
  DecodeRows out;
  for (const auto& [k, v] : cache) out.cache.emplace(k, std::make_shared<const Tensor>(take_rows(*v, rows)));
  out.tokens = take_rows(tokens, rows);
  out.position = pick(position, rows);
  out.logits = take_rows(logits, rows);
  for (int64_t r : rows) out.has_logits.push_back(has_logits[r]);
  return out;
}

void DecodeRows::put(const std::vector<int64_t>& rows, const DecodeRows& part) {
  for (const auto& [k, v] : part.cache) cache[k] = put_shared(cache.at(k), rows, *v);
  put_rows(tokens, rows, part.tokens);
  put_rows(logits, rows, part.logits);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    position[rows[i]] = part.position[i];
    has_logits[rows[i]] = part.has_logits[i];
  }
}

}  // namespace detail

// --- Stream: the generation API -------------------------------------------------------------------

namespace {

int64_t effective_segment_len(const Stream::Impl& st) { return detail::checked_segment_len(st.segment_len, st.rt->manifest); }

detail::Rows current_rows(const Stream::Impl& st) {
  detail::Rows r;
  r.load = [&st] { return st.host_states(); };
  r.pending = st.pending;
  if (st.gen) {
    r.gen = *st.gen;
  } else {
    r.gen = detail::DecodeRows::empty(st.rt->manifest, st.batch);
    if (!st.step_has.empty()) {  // logits of earlier steps carry over
      r.gen.logits = st.step_logits;
      r.gen.has_logits = st.step_has;
    }
  }
  r.committed.assign(st.batch, 0);
  return r;
}

void commit(Stream::Impl& st, detail::Rows& r) {  // nothing here throws but an allocation before the first assignment
  std::vector<Ort::Value> states;
  if (r.states_changed)
    for (const auto& s : st.rt->manifest.state) states.push_back(detail::owned_copy(r.host->at(s.name)));
  if (r.states_changed) st.states = std::move(states);
  st.pending = r.pending;
  st.segments += *std::max_element(r.committed.begin(), r.committed.end());
  st.gen = std::move(r.gen);
}

}  // namespace

void Stream::set_segment_len(int64_t segment_len) {
  detail::checked_segment_len(segment_len, impl_->rt->manifest);
  impl_->segment_len = segment_len;
}

int64_t Stream::segment_len() const { return effective_segment_len(*impl_); }

std::vector<int64_t> Stream::position() const { return impl_->gen ? impl_->gen->position : std::vector<int64_t>(impl_->batch, 0); }

void Stream::append(const Tensor& tokens) {
  Impl& st = *impl_;
  const Manifest& m = st.rt->manifest;
  detail::decode_spec(m);
  Tensor tok = tokens;
  if (tok.shape.size() == 1 && st.batch == 1) tok.shape.insert(tok.shape.begin(), 1);
  if (tok.dtype != DType::Int64) throw DTypeError("tokens must be int64 token ids", "int64", dtype_name(tok.dtype));
  if (tok.shape.size() != 2) throw RankError("tokens must be [batch, n]", "rank 2 (or 1 for a batch-1 stream)", "rank " + std::to_string(tok.shape.size()));
  if (tok.shape[0] != st.batch) throw BatchMismatchError("tokens batch size differs from the stream's", std::to_string(st.batch), std::to_string(tok.shape[0]));
  detail::check_new_tokens(tok, m);
  append_counts(tok, std::vector<int64_t>(st.batch, tok.shape[1]));
}

void Stream::append_counts(const Tensor& tokens, const std::vector<int64_t>& counts) {
  Impl& st = *impl_;
  const int64_t segment_len = effective_segment_len(st);
  detail::Rows r = current_rows(st);
  for (int64_t p : r.gen.position)
    if (p > segment_len)
      throw InputError("the stream's partial segment is longer than its segment length", "<= " + std::to_string(segment_len) + " tokens", std::to_string(p),
                       "set the segment length back, or flush() first");
  detail::append_rows(*st.rt, r, tokens, counts, segment_len);
  commit(st, r);
}

Tensor Stream::next_logits() const {
  const Impl& st = *impl_;
  const std::vector<bool>& has = st.gen ? st.gen->has_logits : st.step_has;
  std::vector<int64_t> missing;
  for (int64_t b = 0; b < st.batch; ++b)
    if (has.empty() || !has[b]) missing.push_back(b);
  if (!missing.empty()) {
    std::string rows = "[";
    for (std::size_t i = 0; i < missing.size(); ++i) rows += (i ? ", " : "") + std::to_string(missing[i]);
    throw InputError("no logits yet: append a prompt (or step) first", "every row has consumed a token", "rows " + rows + "] have none");
  }
  return st.gen ? st.gen->logits : st.step_logits;
}

void Stream::flush() {
  Impl& st = *impl_;
  if (!st.gen) return;
  detail::Rows r = current_rows(st);
  detail::flush_rows(*st.rt, r);
  commit(st, r);
}

std::vector<std::vector<int64_t>> Stream::generate(int64_t max_new_tokens, const SamplingOptions& options, uint64_t seed, const std::vector<int64_t>& stop_tokens,
                                                   const std::function<void(const std::vector<int64_t>&)>& callback) {
  Impl& st = *impl_;
  const Manifest& m = st.rt->manifest;
  detail::decode_spec(m);
  detail::check_generate_args(m, max_new_tokens, options, stop_tokens);
  next_logits();  // every row must have logits before the first draw
  std::vector<SplitMix64> rngs;
  for (int64_t b = 0; b < st.batch; ++b) rngs.emplace_back(seed + static_cast<uint64_t>(b));
  std::vector<bool> running(st.batch, true);
  std::vector<std::vector<int64_t>> rounds;
  for (int64_t k = 0; k < max_new_tokens; ++k) {
    if (std::none_of(running.begin(), running.end(), [](bool x) { return x; })) break;
    const Tensor logits = next_logits_unchecked();
    std::vector<int64_t> chosen(st.batch, -1), counts(st.batch, 0);
    Tensor ids(DType::Int64, {st.batch, 1});
    for (int64_t b = 0; b < st.batch; ++b) {
      if (!running[b]) continue;
      chosen[b] = sample(logits.data<float>() + b * m.vocab_size, m.vocab_size, options, rngs[b]);
      ids.data<int64_t>()[b] = chosen[b];
      counts[b] = 1;
    }
    append_counts(ids, counts);
    for (int64_t b = 0; b < st.batch; ++b)
      if (running[b] && std::find(stop_tokens.begin(), stop_tokens.end(), chosen[b]) != stop_tokens.end()) running[b] = false;
    if (callback) callback(chosen);
    rounds.push_back(std::move(chosen));
  }
  return rounds;
}

Tensor Stream::next_logits_unchecked() const { return impl_->gen ? impl_->gen->logits : impl_->step_logits; }

}  // namespace memx
