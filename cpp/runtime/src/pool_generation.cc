// StreamPool generation, the twin of memx/runtimes/pool.py's append / next_logits / position /
// flush / generate. The streams of a call are gathered in chunks of at most max_batch rows (their
// states, pending resets and decode rows stacked as one batch), run by the engine Stream uses
// (generation.cc: detail::append_rows, detail::flush_rows), and written back only after every
// chunk succeeded: a failed call changes no stream.
#include <algorithm>

#include "memx/runtime.hpp"
#include "memx/sampling.hpp"
#include "pool_impl.hpp"

namespace memx {

namespace {

using Chunk = std::vector<int64_t>;
using Held = std::vector<std::pair<Chunk, detail::Rows>>;  // each chunk's rows, until every chunk succeeded

std::string list_str(const std::vector<int64_t>& v) {  // "[1, 2, 3]", Python's list formatting
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// the states, pending resets and decode rows of chunk's streams as one batch (fresh decode rows
// for streams that never appended, with the logits of an earlier step as Stream carries them);
// the states are stacked only when the engine needs them
detail::Rows gathered(const StreamPool::Impl& p, const Chunk& chunk) {
  const Manifest& m = p.rt->manifest;
  detail::Rows r;
  r.load = [&p, chunk] {
    std::map<std::string, Tensor> states;
    for (const auto& s : p.rt->manifest.state) {
      std::vector<const Tensor*> parts;
      for (int64_t id : chunk) parts.push_back(&p.slots.at(id).states.at(s.name));
      states.emplace(s.name, concat_rows(parts));
    }
    return states;
  };
  const detail::DecodeRows empty = detail::DecodeRows::empty(m, 1);
  std::vector<detail::DecodeRows> stepped;  // fresh rows holding a step's logits
  stepped.reserve(chunk.size());            // no reallocation: rows point into it
  std::vector<const detail::DecodeRows*> rows;
  for (int64_t id : chunk) {
    r.pending.push_back(p.slots.at(id).pending_reset[0]);
    auto it = p.gen.find(id);
    auto step = p.step_logits.find(id);
    if (it != p.gen.end()) {
      rows.push_back(&it->second);
    } else if (step != p.step_logits.end()) {
      stepped.push_back(empty);
      stepped.back().logits = step->second;
      stepped.back().has_logits[0] = true;
      rows.push_back(&stepped.back());
    } else {
      rows.push_back(&empty);
    }
  }
  r.gen = detail::DecodeRows::stack(rows);
  r.committed.assign(chunk.size(), 0);
  return r;
}

// make every chunk's rows current; the new values are built first, so nothing is half written
void commit(StreamPool::Impl& p, Held& held) {
  std::vector<std::pair<int64_t, SnapshotData>> slots;
  std::vector<std::pair<int64_t, detail::DecodeRows>> gens;
  for (auto& [chunk, r] : held)
    for (std::size_t row = 0; row < chunk.size(); ++row) {
      SnapshotData next = p.slots.at(chunk[row]);
      if (r.states_changed)
        for (const auto& [name, t] : *r.host) next.states[name] = t.rows(row, row + 1);
      next.pending_reset = {r.pending[row]};
      next.segments += r.committed[row];
      slots.emplace_back(chunk[row], std::move(next));
      gens.emplace_back(chunk[row], r.gen.take({static_cast<int64_t>(row)}));
    }
  for (auto& [id, next] : slots) p.slots.at(id) = std::move(next);
  for (auto& [id, rows] : gens) {
    p.gen.insert_or_assign(id, std::move(rows));
    p.step_logits.erase(id);  // carried into its generation rows
  }
}

// ids in chunks of at most max_batch, in order
std::vector<Chunk> chunks(const std::vector<int64_t>& ids, int64_t max_batch) {
  std::vector<Chunk> out;
  for (std::size_t start = 0; start < ids.size(); start += static_cast<std::size_t>(max_batch))
    out.emplace_back(ids.begin() + start, ids.begin() + std::min(ids.size(), start + static_cast<std::size_t>(max_batch)));
  return out;
}

// the chunk's tokens as [k, n] padded with token 0, and each row's count
std::pair<Tensor, std::vector<int64_t>> padded(const StreamPool::Impl::Tokens& tokens, std::size_t start, std::size_t k) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < k; ++i) n = std::max(n, tokens[start + i].second.size());
  Tensor batch(DType::Int64, {static_cast<int64_t>(k), static_cast<int64_t>(n)});
  std::vector<int64_t> counts;
  for (std::size_t i = 0; i < k; ++i) {
    const std::vector<int64_t>& ids = tokens[start + i].second;
    std::copy(ids.begin(), ids.end(), batch.data<int64_t>() + i * n);
    counts.push_back(static_cast<int64_t>(ids.size()));
  }
  return {std::move(batch), std::move(counts)};
}

void check_positions_within(const detail::DecodeRows& rows, int64_t segment_len) {
  if (std::all_of(rows.position.begin(), rows.position.end(), [&](int64_t p) { return p <= segment_len; })) return;
  throw InputError("a stream's partial segment is longer than the pool's segment length", "<= " + std::to_string(segment_len) + " tokens", list_str(rows.position));
}

std::vector<int64_t> unique_ids(const std::vector<int64_t>& ids) {  // first occurrences, in order
  std::vector<int64_t> out;
  for (int64_t id : ids)
    if (std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
  return out;
}

}  // namespace

void StreamPool::Impl::append(const Tokens& tokens, int64_t segment_len) {
  Held held;
  for (std::size_t start = 0; start < tokens.size(); start += static_cast<std::size_t>(max_batch)) {
    const std::size_t k = std::min(tokens.size() - start, static_cast<std::size_t>(max_batch));
    Chunk chunk;
    for (std::size_t i = 0; i < k; ++i) chunk.push_back(tokens[start + i].first);
    auto [batch, counts] = padded(tokens, start, k);
    detail::Rows r = gathered(*this, chunk);
    check_positions_within(r.gen, segment_len);
    detail::append_rows(*rt, r, batch, counts, segment_len);
    held.emplace_back(std::move(chunk), std::move(r));
  }
  commit(*this, held);
}

void StreamPool::append(const std::map<int64_t, std::vector<int64_t>>& inputs) {
  const Manifest& m = impl_->rt->manifest;
  detail::decode_spec(m);
  Impl::Tokens tokens;
  for (const auto& [id, ids] : inputs) {
    impl_->slot(id);
    Tensor given(DType::Int64, {static_cast<int64_t>(ids.size())});  // 1-D, as Python names it
    std::copy(ids.begin(), ids.end(), given.data<int64_t>());
    detail::check_new_tokens(given, m);
    tokens.emplace_back(id, ids);
  }
  impl_->append(tokens, segment_len());
}

Tensor StreamPool::next_logits(int64_t id) const {
  impl_->slot(id);
  const Tensor* held = impl_->logits_of(id);
  if (!held) throw InputError("no logits yet: append a prompt to this stream first", "a stream that has consumed a token", "stream " + std::to_string(id));
  Tensor logits = *held;  // [1, V]
  logits.shape.erase(logits.shape.begin());
  return logits;
}

int64_t StreamPool::position(int64_t id) const {
  impl_->slot(id);
  auto it = impl_->gen.find(id);
  return it == impl_->gen.end() ? 0 : it->second.position[0];
}

void StreamPool::flush() {
  std::vector<int64_t> ids;
  for (const auto& [id, _] : impl_->gen) ids.push_back(id);
  flush(ids);
}

void StreamPool::flush(const std::vector<int64_t>& ids) {
  detail::decode_spec(impl_->rt->manifest);
  std::vector<int64_t> open;  // streams with an open segment
  for (int64_t id : ids) impl_->slot(id);
  if (unique_ids(ids).size() != ids.size()) throw InputError("a stream is given twice to pool.flush", "each stream once", list_str(ids));
  for (int64_t id : ids) {
    auto it = impl_->gen.find(id);
    if (it != impl_->gen.end() && it->second.position[0] > 0) open.push_back(id);
  }
  Held held;
  for (Chunk& chunk : chunks(open, impl_->max_batch)) {
    detail::Rows r = gathered(*impl_, chunk);
    detail::flush_rows(*impl_->rt, r);
    held.emplace_back(std::move(chunk), std::move(r));
  }
  commit(*impl_, held);
}

std::map<int64_t, std::vector<int64_t>> StreamPool::generate(const std::vector<int64_t>& ids, int64_t max_new_tokens, const SamplingOptions& options, uint64_t seed,
                                                             const std::vector<int64_t>& stop_tokens, const RoundCallback& callback) {
  std::map<int64_t, uint64_t> seeds;
  for (int64_t id : ids) seeds[id] = seed;
  return generate(ids, max_new_tokens, options, seeds, stop_tokens, callback);
}

std::map<int64_t, std::vector<int64_t>> StreamPool::generate(const std::vector<int64_t>& ids, int64_t max_new_tokens, const SamplingOptions& options,
                                                             const std::map<int64_t, uint64_t>& seeds, const std::vector<int64_t>& stop_tokens,
                                                             const RoundCallback& callback) {
  const Manifest& m = impl_->rt->manifest;
  detail::decode_spec(m);
  for (int64_t id : ids) impl_->slot(id);
  if (unique_ids(ids).size() != ids.size()) throw InputError("a stream is given twice to pool.generate", "each stream once", list_str(ids));
  detail::check_generate_args(m, max_new_tokens, options, stop_tokens);
  std::map<int64_t, SplitMix64> rngs;
  for (int64_t id : ids) {
    auto s = seeds.find(id);
    rngs.emplace(id, SplitMix64(s == seeds.end() ? 0 : s->second));
  }
  const int64_t segment_len = this->segment_len();
  for (int64_t id : ids) next_logits(id);  // every stream must have logits before the first draw
  std::map<int64_t, std::vector<int64_t>> generated;
  for (int64_t id : ids) generated[id];
  std::vector<int64_t> running = ids;
  for (int64_t k = 0; k < max_new_tokens && !running.empty(); ++k) {
    std::map<int64_t, int64_t> round;
    Impl::Tokens tokens;
    for (int64_t id : running) {
      const int64_t t = sample(impl_->logits_of(id)->data<float>(), m.vocab_size, options, rngs.at(id));
      round[id] = t;
      tokens.push_back({id, {t}});
    }
    impl_->append(tokens, segment_len);
    for (const auto& [id, t] : round) generated[id].push_back(t);
    auto stopped = [&](int64_t id) { return std::find(stop_tokens.begin(), stop_tokens.end(), round.at(id)) != stop_tokens.end(); };
    running.erase(std::remove_if(running.begin(), running.end(), stopped), running.end());
    if (callback) callback(round);
  }
  return generated;
}

void StreamPool::set_segment_len(int64_t segment_len) {
  detail::checked_segment_len(segment_len, impl_->rt->manifest);
  impl_->segment_len = segment_len;
}

int64_t StreamPool::segment_len() const { return detail::checked_segment_len(impl_->segment_len, impl_->rt->manifest); }

}  // namespace memx
