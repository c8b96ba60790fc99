"""Convert the shipped digits_int8.onnx into the canonical model file digits.syn.

Run after train.py (or on the shipped files): `python examples/digits/compile.py`.
Prints the model id; the .syn file is what `synapse run` and InferenceSession load
without importing ONNX.
"""
import os

from synapse_gpu.modelfile import save_model
from synapse_gpu.onnx.importer import import_onnx

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "synapse_gpu",
                        "examples")


def main():
    src, dst = os.path.join(EXAMPLES, "digits_int8.onnx"), os.path.join(EXAMPLES, "digits.syn")
    model_id = save_model(import_onnx(src), dst)
    print(f"wrote {os.path.normpath(dst)} ({os.path.getsize(dst)} bytes), model id {model_id}")


if __name__ == "__main__":
    main()
