"""The shipped zoo models (checkpoints in memx/zoo/checkpoints/, made by memx/zoo/make.py), registered when memx.models is imported."""

from memx.models.zoo import ZooEntry, register_zoo

_RMT = dict(vocab_size=64, d_model=64, n_heads=4, n_layers=2, d_ff=128, max_segment_len=16)
GUESS_8_SYMBOLS = 0.1 ** 8  # every one of 8 answer tokens right by chance (copy-8, reverse-8)


def _curriculum(steps: int) -> dict:
    """Training of the curriculum-trained entries: one segment of 16 until 99%, then the entry's segments."""
    return dict(steps=steps, batch=32, lr=1e-3, schedule="cosine", curriculum=(16,), eval_every=250, seed=0)


register_zoo(ZooEntry(
    name="rmt-ar",
    family="rmt",
    config=dict(_RMT, num_memory=4),
    task="associative-retrieval",
    segment_len=8,
    train=_curriculum(13000),
    description="RMT decoder, 4 memory tokens: the 4 key->value pairs fill segment 1, QUERY and the key come in segment 2, "
    "so every pair crosses the boundary in memory (guessing one of the prompt's 4 values would score 25%); "
    "curriculum: one segment of 16 until 99%, then segments of 8",
    chance=0.1,
    paper="AR, 4 segments, memory 3: 0.99 (RMT; Transformer-XL 0.85); 1-5 segments: 0.97-1.00 | memx: 2 segments, memory 4, 2 layers (paper: 6), 13k steps",
))

register_zoo(ZooEntry(
    name="rmt-copy",
    family="rmt",
    config=dict(_RMT, num_memory=8),
    task="copy-8",
    segment_len=4,
    train=_curriculum(6000),
    description="RMT decoder, 8 memory tokens: 8 symbols in segments 1-2, SEP and the copy in segments 3-4, generated "
    "token by token (the first 4 answer tokens come from 2 segments back, through memory only); scored per item "
    "(all 8 right; a guess: 1e-8); curriculum: one segment of 16 until 99%, then segments of 4",
    chance=GUESS_8_SYMBOLS,
    paper="copy 24 -> 48, 9 segments x 8, memory 8: 1.00 (4 runs); Transformer-XL 0.28 | memx: 8 symbols copied once, segments of 4, 2 layers, 6k steps",
))

register_zoo(ZooEntry(
    name="rmt-reverse",
    family="rmt",
    config=dict(_RMT, num_memory=8),
    task="reverse-8",
    segment_len=4,
    train=_curriculum(3000),
    description="RMT decoder, 8 memory tokens: 8 symbols in segments 1-2, SEP and the symbols reversed in segments 3-4 "
    "(the last 4 answer tokens come from 2 segments back, through memory only); scored per item (all 8 right; a guess: 1e-8); "
    "curriculum: one segment of 16 until 99%, then segments of 4",
    chance=GUESS_8_SYMBOLS,
    paper="reverse 24 -> 24, 6 segments x 8, memory 8: mean 0.90; Transformer-XL 0.67 | memx: 8 symbols, segments of 4, 2 layers, 3k steps",
))

register_zoo(ZooEntry(
    name="gmat-majority",
    family="gmat",
    config=dict(vocab_size=64, d_model=64, n_heads=4, n_layers=2, d_ff=128, num_memory=8, max_segment_len=32, pattern="band", window=4, recurrent=True),
    task="majority",
    segment_len=16,
    train=dict(steps=1500, batch=32, lr=1e-3, warmup=100, schedule="cosine", seed=0),
    description="GMAT, band attention (window 4) + 8 recurrent global memory slots: 64 symbols over 4 segments, "
    "the answer asked in a 5th segment that holds only SEP (without memory: 1 in 5)",
    chance=0.2,
))

register_zoo(ZooEntry(
    name="memformer-majority",
    family="memformer",
    config=dict(vocab_size=64, d_model=64, n_heads=4, n_layers=2, n_decoder_layers=1, d_ff=128, num_memory=8, max_segment_len=32, temperature=0.5),
    task="majority",
    segment_len=16,
    train=dict(steps=2000, batch=32, lr=1e-3, warmup=100, schedule="cosine", seed=0),
    description="Memformer, 8 slots (reader in each encoder layer, slot writer, BMN) + 1 decoder layer: "
    "64 symbols over 4 segments, the answer asked in a 5th segment that holds only SEP (without memory: 1 in 5)",
    chance=0.2,
))

register_zoo(ZooEntry(
    name="infformer-sort",
    family="infformer",
    config=dict(vocab_size=64, d_model=64, n_heads=4, n_layers=2, d_ff=128, num_memory=16, max_segment_len=16, stm_len=16, sticky=True),
    task="frequency-sort",
    segment_len=16,
    train=dict(steps=3000, batch=32, lr=1e-3, warmup=100, schedule="cosine", seed=0),
    description="∞-former, 16-token STM + continuous LTM (16 RBFs, sticky): 96 symbols with a drifting distribution, "
    "then the 8 symbols by descending count; scored per answer token (a guess: 1 in 8; sorting only the last 16 "
    "symbols, what the short-term memory alone holds at the answer, scores 21.8%)",
    chance=0.125,
    metric="tokens",
    paper="sorting 20 symbols over 4k-16k tokens: qualitative only (the ∞-former paper plots it; no figure in the seed notes) | memx: 8 symbols, 96 tokens",
))

register_zoo(ZooEntry(
    name="memtr-majority",
    family="memtr",
    config=dict(vocab_size=64, d_model=64, n_heads=4, n_layers=2, d_ff=128, num_memory=8, max_segment_len=32, variant="memtransformer", recurrent=True),
    task="majority",
    segment_len=16,
    train=dict(steps=1500, batch=32, lr=1e-3, warmup=100, schedule="cosine", seed=0),
    description="Memory Transformer, 8 recurrent memory tokens: 64 symbols over 4 segments, the answer asked in a 5th "
    "segment that holds only SEP (without memory: 1 in 5)",
    chance=0.2,
))

register_zoo(ZooEntry(
    name="memtr-copy",
    family="memtr",
    config=dict(vocab_size=64, d_model=64, n_heads=4, n_layers=2, d_ff=128, num_memory=8, max_segment_len=16, variant="memtransformer", recurrent=True),
    task="copy-8",
    segment_len=4,
    train=_curriculum(3000),
    description="Memory Transformer (recurrent, bidirectional within a segment), 8 memory tokens: 8 symbols in segments 1-2, "
    "SEP and blanked answer positions in segments 3-4 (a non-causal model does not see the copy it writes); every answer "
    "token comes from memory; scored per item (all 8 right; a guess: 1e-8); curriculum: one segment of 16, then segments of 4",
    chance=GUESS_8_SYMBOLS,
    paper="copy 24 -> 48, 9 segments x 8, memory 8: RMT 1.00, Transformer-XL 0.28 (no Memory Transformer figure in the seed notes) | memx: 8 symbols copied once, segments of 4, 3k steps",
))

register_zoo(ZooEntry(
    name="infformer-majority",
    family="infformer",
    config=dict(vocab_size=64, d_model=64, n_heads=4, n_layers=2, d_ff=128, num_memory=16, max_segment_len=16, stm_len=16, sticky=True),
    task="majority",
    segment_len=16,
    train=dict(steps=1500, batch=32, lr=1e-3, warmup=100, schedule="cosine", seed=0),
    description="∞-former, 16-token STM + continuous LTM (16 RBFs, sticky): 64 symbols over 4 segments, the answer asked "
    "in a 5th segment that holds only SEP, so the counts live only in the continuous long-term memory (without memory: 1 in 5)",
    chance=0.2,
))
