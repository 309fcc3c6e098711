"""The vLLM sampling backend (GPU; the [gpu] extra). Imported only when a config selects it.

vLLM generates; the trainer's old log-probs are then recomputed by a teacher-forced pass of the
training model (harness.policy.sampling.token_logprobs), because vLLM reports log-probs of the raw
logits (before temperature) and in another numeric kernel than the one the loss uses. Each
request carries its own seed from the sample key, so samples are reproducible per key; each
iteration's adapter is served with a LoRARequest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from spogw.harness.policy.sampling import Sample, SampleKey, SamplingParams, key_seed

INSTALL_HINT = "the vllm sampling backend needs the [gpu] extra on a CUDA machine: pip install 'spogw-harness[gpu]'"


def require_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return vllm


class VLLMSampler:
    def __init__(
        self, model_id: str, max_lora_rank: int = 8, dtype: str = "bfloat16", gpu_memory_utilization: float = 0.85
    ) -> None:
        vllm = require_vllm()
        self._vllm = vllm
        self.engine = vllm.LLM(
            model=model_id,
            enable_lora=True,
            max_lora_rank=max_lora_rank,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        self.tokenizer = self.engine.get_tokenizer()

    def sample(
        self,
        prompts: Sequence[str],
        keys: Sequence[SampleKey],
        params: SamplingParams,
        adapter_dir: str | None = None,
        adapter_id: int = 1,
    ) -> list[Sample]:
        from vllm.lora.request import LoRARequest

        requests = [
            self._vllm.SamplingParams(
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                stop=list(params.stop),
                include_stop_str_in_output=True,
                seed=key_seed(key),
            )
            for key in keys
        ]
        lora = LoRARequest(f"adapter-{adapter_id}", adapter_id, adapter_dir) if adapter_dir else None
        outputs = self.engine.generate(list(prompts), requests, lora_request=lora, use_tqdm=False)
        samples = []
        for key, output in zip(keys, outputs, strict=True):
            completion = output.outputs[0]
            finish: Literal["stop", "eos", "length"] = (
                "stop"
                if completion.stop_reason is not None
                else ("length" if completion.finish_reason == "length" else "eos")
            )
            samples.append(
                Sample(
                    key=tuple(key),
                    prompt_ids=tuple(output.prompt_token_ids),
                    completion_ids=tuple(completion.token_ids),
                    logprobs=(),
                    text=completion.text,
                    finish=finish,
                )
            )
        return samples
