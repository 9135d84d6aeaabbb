"""Export the bundled all-MiniLM-L6-v2 to ONNX (float32) and quantise its matrix products to int8, for benchmarks/embedding_speed.py --onnx-file.

Needs `onnx` (and `ml_dtypes`) besides onnxruntime, which turnlog does not install: the results
are measured, not shipped (docs/retrieval-quality.md: dynamic int8 is twice as fast here but
its vectors fall to cosine 0.91 against the float model's).

    .venv/bin/python benchmarks/export_minilm_onnx.py [--out-dir /tmp]   # writes minilm-fp32.onnx, minilm-dynamic-int8.onnx
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export(out_dir: Path) -> tuple[Path, Path]:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    from projections.search.embedding import minilm_model_path

    bert = SentenceTransformer(str(minilm_model_path()), device="cpu")[0].auto_model.eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    sample = torch.ones((2, 16), dtype=torch.long)
    float_file, int8_file = out_dir / "minilm-fp32.onnx", out_dir / "minilm-dynamic-int8.onnx"
    torch.onnx.export(
        LastHiddenState(), (sample, sample, torch.zeros_like(sample)), str(float_file),
        input_names=list(INPUTS), output_names=["last_hidden_state"], opset_version=17, dynamo=False,
        dynamic_axes={name: {0: "batch", 1: "sequence"} for name in (*INPUTS, "last_hidden_state")},
    )
    quantize_dynamic(str(float_file), str(int8_file), weight_type=QuantType.QInt8)
    return float_file, int8_file


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp"))
    arguments = parser.parse_args(argv)
    for written in export(arguments.out_dir):
        print(written)


if __name__ == "__main__":
    main()
