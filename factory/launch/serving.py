"""The vLLM OpenAI server that a `synth` Slurm job starts on its node before the client, and stops after it."""

from __future__ import annotations

import shlex

from factory.synth.config import VllmServe


def vllm_lines(serve: VllmServe, gpus_per_node: int) -> tuple[list[str], list[str]]:
    """Shell lines that start the server and wait until it answers, and the client's overrides for it."""
    tensor_parallel = serve.tensor_parallel_size or max(gpus_per_node, 1)
    command = ["vllm", "serve", serve.model, "--served-model-name", serve.served_model_name, "--host", "127.0.0.1",
               "--port", str(serve.port), "--tensor-parallel-size", str(tensor_parallel), *serve.args]
    url = f"http://127.0.0.1:{serve.port}/v1"
    lines = [
        f"# vLLM serves {serve.model} on this node's GPUs for the synth client; stopped when the job ends.",
        f"{shlex.join(command)} &",
        "vllm_pid=$!",
        "trap 'kill $vllm_pid 2>/dev/null; wait $vllm_pid' EXIT",
        f"deadline=$((SECONDS + {serve.startup_timeout_seconds}))",
        f"until curl -sf {url}/models >/dev/null; do",
        '  kill -0 "$vllm_pid" 2>/dev/null || { echo "vllm serve exited before answering" >&2; exit 1; }',
        f'  [ "$SECONDS" -lt "$deadline" ] || {{ echo "vllm serve did not answer within '
        f'{serve.startup_timeout_seconds} s" >&2; exit 1; }}',
        "  sleep 10",
        "done",
    ]
    return lines, [f"synth.base_url={url}", f"synth.model={serve.served_model_name}"]
