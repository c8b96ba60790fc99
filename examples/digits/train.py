"""Train the bundled digits CNN, export it to ONNX and quantize it to int8 (QDQ).

A dev tool, not a runtime dependency: needs torch (CPU wheel) and scikit-learn.
Run from anywhere: `python examples/digits/train.py`. Writes into
synapse_gpu/examples/: digits_f32.onnx, digits_int8.onnx, digits_calib.npz,
digits_test.npz, digits_report.md.

The network exercises the Synapse op set on sklearn's 8x8 digits (1797 images):
conv+BN+ReLU, conv+PReLU, a residual block, a BatchNorm after the residual Add
(quant_pre_process cannot fold it into a conv), max, average and global average
pooling, and a dense classifier. The BN after the Add and the PReLU stay in
the quantized model as float ops between DequantizeLinear and QuantizeLinear.
"""
import os
import random
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from synapse_gpu.onnx.quantize import quantize_onnx

SEED = 0
N_TEST = 360  # 20% held out, stratified; all shipped in digits_test.npz
N_CALIB = 256  # training images used for calibration
EPOCHS = 30
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "synapse_gpu", "examples")


def conv_bn_relu(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class Residual(nn.Module):
    """x + f(x), f = conv-BN-ReLU-conv-BN; the two BNs fold into their convs."""

    def __init__(self, c):
        super().__init__()
        self.f = nn.Sequential(*conv_bn_relu(c, c), nn.Conv2d(c, c, 3, padding=1, bias=False),
                               nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.f(x)


class DigitsNet(nn.Module):
    def __init__(self, c=16, n_classes=10):
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn_relu(1, c),                                      # 8x8, BN folds
            nn.Conv2d(c, c, 3, padding=1), nn.PReLU(c),               # PReLU stays float
            Residual(c),
            nn.BatchNorm2d(c), nn.ReLU(),                             # BN after Add: unfoldable
            nn.MaxPool2d(2),                                          # 4x4
            *conv_bn_relu(c, 2 * c),
            nn.AvgPool2d(2),                                          # 2x2
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),                    # GlobalAveragePool
            nn.Linear(2 * c, n_classes))

    def forward(self, x):
        return self.body(x)


def seed_everything():
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # fixed float reduction order: the same weights on every run


def train(model, x, y):
    opt = torch.optim.AdamW(model.parameters(), weight_decay=1e-4)  # lr: set by the schedule
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2,
                                                total_steps=EPOCHS * ((len(x) + 63) // 64))
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for s in range(0, len(x), 64):
            idx = perm[s:s + 64]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch % 5 == 4 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1:3d}  loss {total / len(x):.4f}")
    model.eval()


def ort_predict(path, images):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": images})[0].argmax(axis=1)


def main():
    seed_everything()
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=N_TEST, stratify=labels, random_state=SEED)

    model = DigitsNet()
    train(model, x_train, y_train)
    with torch.no_grad():
        torch_acc = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()

    os.makedirs(OUT, exist_ok=True)
    f32_path, int8_path = os.path.join(OUT, "digits_f32.onnx"), os.path.join(OUT, "digits_int8.onnx")
    calib_path, test_path = os.path.join(OUT, "digits_calib.npz"), os.path.join(OUT, "digits_test.npz")
    torch.onnx.export(model, torch.from_numpy(x_test[:1]), f32_path, dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "N"}, "logits": {0: "N"}})
    calib = x_train[np.random.default_rng(SEED).choice(len(x_train), N_CALIB, replace=False)]
    np.savez_compressed(calib_path, images=calib)
    np.savez_compressed(test_path, images=x_test, labels=y_test)
    quantize_onnx(f32_path, calib_path, int8_path)

    f32_acc = (ort_predict(f32_path, x_test) == y_test).mean()
    pred_int8 = ort_predict(int8_path, x_test)
    int8_acc = (pred_int8 == y_test).mean()
    agree = (pred_int8 == ort_predict(f32_path, x_test)).mean()
    graph = onnx.load(int8_path).graph
    ops = Counter(n.op_type for n in graph.node)
    float_inits = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    islands = sorted({f"{n.op_type} ({', '.join(i for i in n.input if i in float_inits)})"
                      for n in graph.node if n.op_type != "QuantizeLinear"
                      and n.op_type != "DequantizeLinear" and float_inits.intersection(n.input)})
    sizes = {os.path.basename(p): os.path.getsize(p)
             for p in (f32_path, int8_path, calib_path, test_path)}
    report = "\n".join([
        "# Digits example: accuracy report (generated by examples/digits/train.py)",
        "",
        f"Test set: {len(y_test)} held-out images of sklearn's digits (stratified split, seed {SEED}); "
        f"calibration: {N_CALIB} training images; {EPOCHS} epochs, "
        f"{sum(p.numel() for p in model.parameters())} parameters.",
        "",
        "| model | runtime | top-1 accuracy |",
        "|---|---|---|",
        f"| float32 (torch) | torch {torch.__version__} | {torch_acc:.2%} |",
        f"| digits_f32.onnx | onnxruntime {ort.__version__} | {f32_acc:.2%} |",
        f"| digits_int8.onnx (QDQ, per-channel int8) | onnxruntime {ort.__version__} | {int8_acc:.2%} |",
        "",
        f"int8 vs float top-1 agreement (onnxruntime): {agree:.2%}",
        "",
        "Ops of digits_int8.onnx: " + ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())),
        "",
        "Float islands (ops with float parameters, between DequantizeLinear and QuantizeLinear): "
        + "; ".join(islands),
        "",
        "Files: " + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sizes.items()),
        ""])
    with open(os.path.join(OUT, "digits_report.md"), "w") as f:
        f.write(report)
    print(report)


if __name__ == "__main__":
    main()
