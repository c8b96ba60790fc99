"""ResNet-50's conv layers: synapse_gpu's exact CPU convs vs onnxruntime's int8 QLinearConv.

Every distinct conv shape of ResNet-50 v1.5 at batch 1, 224x224 input, run in one
process through the float32-BLAS path (backends/cpu_conv.py), through the engine this
machine's self-test admits (backends/cpu_engines.py), and through a single-node
onnxruntime QLinearConv model (CPU provider, default options, intra_op_num_threads = 2)
on the same int8 data and on the same reals as uint8 activations (values and zero
points + 128), the activation type its x86 kernels are fastest with. The engine's
outputs must equal the float path's bit for bit; the share equal to onnxruntime's is
reported (its u8s8 kernels saturate on x86 without VNNI). Times are medians
after warm-up, the engines timed in alternating blocks; the totals weight each shape
by how many times ResNet-50 uses it (53 convs). The run reports how much CPU other
processes took meanwhile: on a shared machine, only a quiet run's figures count.

Data: int8 activations uniform over [-128, 127] with z_x = -128 (post-ReLU layers,
the worst case |x - z_x| = 255 for the exact GEMM's chunking) and z_x = -10 at the
stem; weights int8, per-output-channel symmetric quantization of Gaussian floats
(as a real model's); random int32 bias; output scales that spread the outputs over
the int8 range.

    python bench/bench_conv_cpu.py            # full run
    python bench/bench_conv_cpu.py --quick    # fewer repetitions
"""
import argparse
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from synapse_gpu.backends import cpu_conv, cpu_engines
from synapse_gpu.reference.requant import quantize_multiplier
from timing import QuietCheck, load_line, machine_line, median_times

F32 = np.float32

# (name, C, M, input size, kernel, stride, uses in ResNet-50 v1.5)
LAYERS = [
    ("stem 7x7/2", 3, 64, 224, 7, 2, 1),
    ("s1 1x1 64>64", 64, 64, 56, 1, 1, 1),
    ("s1 3x3 64>64", 64, 64, 56, 3, 1, 3),
    ("s1 1x1 64>256", 64, 256, 56, 1, 1, 4),
    ("s1 1x1 256>64", 256, 64, 56, 1, 1, 2),
    ("s2 1x1 256>128", 256, 128, 56, 1, 1, 1),
    ("s2 3x3/2 128>128", 128, 128, 56, 3, 2, 1),
    ("s2 1x1/2 256>512", 256, 512, 56, 1, 2, 1),
    ("s2 1x1 128>512", 128, 512, 28, 1, 1, 4),
    ("s2 1x1 512>128", 512, 128, 28, 1, 1, 3),
    ("s2 3x3 128>128", 128, 128, 28, 3, 1, 3),
    ("s3 1x1 512>256", 512, 256, 28, 1, 1, 1),
    ("s3 3x3/2 256>256", 256, 256, 28, 3, 2, 1),
    ("s3 1x1/2 512>1024", 512, 1024, 28, 1, 2, 1),
    ("s3 1x1 256>1024", 256, 1024, 14, 1, 1, 6),
    ("s3 1x1 1024>256", 1024, 256, 14, 1, 1, 5),
    ("s3 3x3 256>256", 256, 256, 14, 3, 1, 5),
    ("s4 1x1 1024>512", 1024, 512, 14, 1, 1, 1),
    ("s4 3x3/2 512>512", 512, 512, 14, 3, 2, 1),
    ("s4 1x1/2 1024>2048", 1024, 2048, 14, 1, 2, 1),
    ("s4 1x1 512>2048", 512, 2048, 7, 1, 1, 3),
    ("s4 1x1 2048>512", 2048, 512, 7, 1, 1, 2),
    ("s4 3x3 512>512", 512, 512, 7, 3, 1, 2),
]


def make_layer(rng, C, M, H, k, s, zx):
    """int8 data and our params for one layer, and its QLinearConv for int8 and uint8."""
    pad, zy = k // 2, -3
    wf = rng.standard_normal((M, C, k, k)).astype(F32)
    s_w = (np.abs(wf).reshape(M, -1).max(axis=1) / F32(127)).astype(F32)
    w = np.clip(np.rint(wf / s_w.reshape(M, 1, 1, 1)), -127, 127).astype(np.int8)
    x = rng.integers(-128, 128, (1, C, H, H)).astype(np.int8)
    s_x = F32(0.02)
    acc_std = np.sqrt(C * k * k) * 74 * np.abs(w.astype(np.float64)).mean() * 1.25
    s_y = F32(s_x * float(s_w.mean()) * acc_std / 40)
    bias = rng.integers(-int(acc_std), int(acc_std) + 1, M).astype(np.int32)
    m, sh = quantize_multiplier((s_x * s_w) / s_y)  # f32(f32(s_x * s_w) / s_y)
    params = dict(w=w, bias=bias, multiplier=m, shift=sh, w_zero_point=np.zeros(M, np.int32),
                  x_zero_point=zx, y_zero_point=zy, strides=[s, s], pads=[pad] * 4,
                  dilations=[1, 1], group=1)

    def model(dtype, offset):  # uint8: the same reals with values and zero points + 128
        elem = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
        inits = [numpy_helper.from_array(np.array(s_x, F32), "xs"),
                 numpy_helper.from_array(np.array(zx + offset, dtype), "xz"),
                 numpy_helper.from_array(w, "w"), numpy_helper.from_array(s_w, "ws"),
                 numpy_helper.from_array(np.zeros(M, np.int8), "wz"),
                 numpy_helper.from_array(np.array(s_y, F32), "ys"),
                 numpy_helper.from_array(np.array(zy + offset, dtype), "yz"),
                 numpy_helper.from_array(bias, "b")]
        node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz",
                                                "b"], ["y"], kernel_shape=[k, k],
                                strides=[s, s], pads=[pad] * 4)
        graph = helper.make_graph(
            [node], "conv", [helper.make_tensor_value_info("x", elem, x.shape)],
            [helper.make_tensor_value_info("y", elem, None)], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                 ir_version=8).SerializeToString()

    return x, params, model(np.int8, 0), model(np.uint8, 128)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 timed runs per layer, not 24")
    ap.add_argument("--out", help="also write the table (markdown) here")
    args = ap.parse_args()
    warmup, rounds, reps = (2, 2, 3) if args.quick else (3, 4, 6)
    lines = [machine_line()]
    engine, report = cpu_engines.choose(max(C * k * k for _, C, _, _, k, _, _ in LAYERS))
    lines.append("engine: " + "; ".join(report))
    rng = np.random.default_rng(2024)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    totals = np.zeros((4, 2))  # (float path, engine, ORT int8, ORT uint8) x (median, min)
    same = []
    with QuietCheck() as quiet:
        lines.append(f"{'layer':20s} {'out':>14s} {'uses':>4s} {'float ms':>8s} {'engine ms':>9s} "
                     f"{'ORT-s8 ms':>9s} {'ORT-u8 ms':>9s} {'engine/ORT-u8':>13s} {'=ORT-u8':>8s}")
        print(lines[-1])
        for name, C, M, H, k, s, uses in LAYERS:
            x, params, model_s8, model_u8 = make_layer(rng, C, M, H, k, s, -10 if k == 7 else -128)
            prepared = cpu_conv.prepare_conv(**params)
            layer = prepared if engine is None else engine.conv(
                cpu_conv.multiplier_f32(params["multiplier"], params["shift"]), **params)
            s8 = ort.InferenceSession(model_s8, so, providers=["CPUExecutionProvider"])
            u8 = ort.InferenceSession(model_u8, so, providers=["CPUExecutionProvider"])
            xu = (x.astype(np.int16) + 128).astype(np.uint8)
            ours = prepared(x)
            if not np.array_equal(ours, layer(x)):
                raise AssertionError(f"{name}: the engine and the float path differ")
            # onnxruntime's u8s8 kernels saturate on x86 without VNNI: equality is reported
            same.append((np.mean(ours == s8.run(None, {"x": x})[0]),
                         np.mean(ours == u8.run(None, {"x": xu})[0].astype(np.int16) - 128)))
            times = median_times([(lambda: prepared(x), 0.3), (lambda: layer(x), 0.05),
                                  (lambda: s8.run(None, {"x": x}), 0.05),
                                  (lambda: u8.run(None, {"x": xu}), 0.05)], warmup, rounds, reps)
            totals += uses * np.array(times)
            (t_f, _), (t_e, _), (t_s8, _), (t_u8, _) = times
            lines.append(f"{name:20s} {str(ours.shape[1:]):>14s} {uses:4d} {t_f * 1e3:8.3f} "
                         f"{t_e * 1e3:9.3f} {t_s8 * 1e3:9.3f} {t_u8 * 1e3:9.3f} {t_e / t_u8:13.2f} "
                         f"{same[-1][1]:8.1%}")
            print(lines[-1], flush=True)
        (f_t, f_min), (e_t, e_min), (s8_t, _), (u8_t, u8_min) = totals
        lines.append(f"{'ResNet-50, 53 convs':20s} {'':14s} {'':4s} {f_t * 1e3:8.2f} {e_t * 1e3:9.2f} "
                     f"{s8_t * 1e3:9.2f} {u8_t * 1e3:9.2f} {e_t / u8_t:13.2f}")
    same = np.array(same)
    lines += ["engine == float path on every layer (asserted); outputs equal to onnxruntime's: "
              f"int8 QLinearConv {same[:, 0].min():.1%} to {same[:, 0].max():.1%} per layer, "
              f"uint8 {same[:, 1].min():.1%} to {same[:, 1].max():.1%}",
              quiet.line(), load_line(),
              f"total engine / ORT uint8 = {e_t / u8_t:.2f} (medians), {e_min / u8_min:.2f} (best runs); "
              f"float path / engine = {f_t / e_t:.2f}"]
    print("\n".join(lines[-4:]))
    if args.out:
        with open(args.out, "w") as f:
            f.write("# ResNet-50 conv layers, CPU (bench/bench_conv_cpu.py)\n\n```\n"
                    + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
