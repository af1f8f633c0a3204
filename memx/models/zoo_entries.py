"""The shipped zoo models (checkpoints in memx/zoo/checkpoints/, made by memx/zoo/make.py), registered when memx.models is imported."""

from memx.models.zoo import ZooEntry, register_zoo

_RMT_AR = dict(vocab_size=64, d_model=64, n_heads=4, n_layers=2, d_ff=128, num_memory=8, max_segment_len=32)

register_zoo(ZooEntry(
    name="rmt-ar",
    family="rmt",
    config=_RMT_AR,
    task="associative-retrieval",
    segment_len=8,
    train=dict(steps=2000, batch=32, lr=5e-4, seed=0),
    description="RMT decoder, 8 memory tokens: 4 key->value pairs in segment 1, the query in segment 2 "
    "(guessing one of the prompt's 4 values would score 25%; not yet trained to solve the task)",
    chance=0.1,
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
    train=dict(steps=1500, batch=32, lr=1e-3, warmup=100, schedule="cosine", seed=0),
    description="∞-former, 16-token STM + continuous LTM (16 RBFs, sticky): 96 symbols with a drifting distribution, "
    "then the 8 symbols by descending count; scored per answer token (a guess: 1 in 8; sorting only the last 16 "
    "symbols, what the short-term memory alone holds at the answer, scores 21.8%)",
    chance=0.125,
    metric="tokens",
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
