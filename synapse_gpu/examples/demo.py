"""`synapse demo`: the bundled digits CNN on its held-out images.

Prints accuracy, the model id and the run digest, and, where a GPU answers, runs
the same images on the GPU and checks the outputs are bit-identical to the CPU's.
"""
from __future__ import annotations

from importlib import resources

import numpy as np


def example_path(name):
    return resources.files("synapse_gpu.examples").joinpath(name)


def run_demo(device="auto", out=print):
    import synapse_gpu as sg
    from synapse_gpu import backends

    data = np.load(str(example_path("digits_test.npz")))
    images, labels = data["images"], data["labels"]
    model = str(example_path("digits.syn"))
    runs = {}
    devices = ["cpu"]
    ok, reason = backends.cuda_status()
    if device in ("auto", "cuda") and (ok or device == "cuda"):
        devices.append("cuda")
    for dev in devices:
        sess = sg.InferenceSession(model, device=dev)
        r = sess.run_full(None, {sess.get_inputs()[0].name: images}, output_type="int8")
        runs[dev] = r
        acc = float(np.mean(r.int8_outputs[sess.get_outputs()[0].name].argmax(axis=1) == labels))
        out(f"[{dev}] digits CNN, {len(images)} test images: accuracy {acc:.2%}")
        out(f"[{dev}] model id {sess.model_id}")
        out(f"[{dev}] run digest {r.digest}")
    if "cuda" in runs:
        same = runs["cuda"].digest == runs["cpu"].digest
        out(f"CPU and GPU outputs bit-identical: {'yes' if same else 'NO'}")
        return 0 if same else 1
    out(f"no GPU comparison: {reason}")
    return 0
