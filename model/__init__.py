"""Local MoE engine: the DeepSeek-V3 / Kimi K2 architecture in PyTorch.

Importing this package imports nothing heavy; torch loads with the submodules:

* :mod:`.config` -- ``MoEConfig`` from a HF ``config.json`` (no torch needed);
* :mod:`.transformer` -- ``MoEForCausalLM`` and its HF checkpoint-key contract;
* :mod:`.mla`, :mod:`.moe`, :mod:`.layers`, :mod:`.cache` -- attention over the compressed
  latent cache, routed experts, RMSNorm/YaRN rope, the cache itself;
* :mod:`.generation` -- greedy/sampled generation for batches, with a per-step logits hook;
* :mod:`.stats` -- router load statistics and parameter accounting;
* :mod:`.checkpoint`, :mod:`.fp8` -- safetensors loading/saving and FP8 block dequantisation;
* :mod:`.interop` -- loading an in-memory transformers ``DeepseekV3ForCausalLM``.
* :mod:`.presets` -- the tiny/large DeepSeek-V3 config dicts of the tests and benchmark.
"""
