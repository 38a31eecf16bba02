"""Facial prior expert on CPU: faces per second per backend, and the prior's share of a full EmoLA forward.

Offline and download-free: dlib uses its shipped models; 2D-FAN runs with random weights (same architecture and
cost as the released one); S3FD (face-alignment's detector) is timed as a network forward with random weights;
insightface_2d106 runs a randomly initialised MobileNet-0.5 ONNX graph of 2d106det's size and signature.

    python benchmarks/bench_facial_prior.py [--faces 8 --repeats 5 --hidden 256 --layers 4 --image-size 112]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np
import skimage.data
import torch
from PIL import Image

from transformers_emola.facial_prior import FacialPriorExtractor

FACE_BOX = (175.0, 76.0, 265.0, 166.0)  # the astronaut's face


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (numba compilation, onnxruntime graph optimisation, ...)
    return min(_timed(fn) for _ in range(repeats))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def mobilenet_2d106_like(path: str, seed: int = 0) -> str:
    """A MobileNet-v1 0.5 (folded BN) regressor 192x192 -> 212 with random weights, like 2d106det.onnx."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x, cin, cout, stride, group=1, k=3):
        name = f"conv{len(nodes)}"
        w = (rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k))).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, name + "_w"),
                      numpy_helper.from_array(np.zeros(cout, np.float32), name + "_b")])
        nodes.append(helper.make_node("Conv", [x, name + "_w", name + "_b"], [name], strides=[stride, stride],
                                      pads=[k // 2] * 4, group=group))
        nodes.append(helper.make_node("Relu", [name], [name + "_r"]))
        return name + "_r"

    x = conv("data", 3, 16, 2)
    cin = 16
    for cout, stride in [(32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2)] + [(256, 1)] * 5 + [(512, 2),
                                                                                                        (512, 1)]:
        x = conv(x, cin, cin, stride, group=cin)  # depthwise
        x = conv(x, cin, cout, 1, k=1)  # pointwise
        cin = cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"]))
    inits.append(numpy_helper.from_array(rng.standard_normal((212, 512)).astype(np.float32) * 0.01, "fc_w"))
    inits.append(numpy_helper.from_array(np.zeros(212, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc1"], transB=1))
    graph = helper.make_graph(nodes, "mobilenet05_2d106",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 192, 192])],
                              [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", 212])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    save(model, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=8, help="images per timed call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and onnxruntime (default: their own defaults)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)

    astronaut = skimage.data.astronaut()
    images = [astronaut] * args.faces
    boxes = [FACE_BOX] * args.faces
    rows = []  # (backend, what, faces per call, seconds per call)

    dlib = FacialPriorExtractor("dlib", batch_size=args.faces)
    rows.append(("dlib", "detect + 68 landmarks", args.faces, best_seconds(lambda: dlib(images), args.repeats)))
    rows.append(("dlib", "68 landmarks, given box", args.faces,
                 best_seconds(lambda: dlib(images, face_boxes=boxes), args.repeats)))

    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    fan = FAN(4).eval()
    for batch_size in (1, args.faces):
        extractor = FacialPriorExtractor("face_alignment", fan=fan, batch_size=batch_size)
        rows.append(("face_alignment", f"2D-FAN + flip, given box, batch {batch_size}", args.faces,
                     best_seconds(lambda: extractor(images, face_boxes=boxes), args.repeats)))
    no_flip = FacialPriorExtractor("face_alignment", fan=fan, batch_size=args.faces, flip_input=False)
    rows.append(("face_alignment", f"2D-FAN no flip, given box, batch {args.faces}", args.faces,
                 best_seconds(lambda: no_flip(images, face_boxes=boxes), args.repeats)))
    detector = s3fd().eval()
    frame = torch.from_numpy(astronaut.transpose(2, 0, 1)[None].astype(np.float32))

    def s3fd_forward():
        with torch.no_grad():
            detector(frame)

    rows.append(("face_alignment", "S3FD detector forward (512x512)", 1, best_seconds(s3fd_forward, args.repeats)))

    with tempfile.TemporaryDirectory() as folder:
        model_path = mobilenet_2d106_like(f"{folder}/mobilenet05.onnx")
        import onnxruntime

        session_options = onnxruntime.SessionOptions()
        if args.threads:
            session_options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(model_path, session_options, providers=["CPUExecutionProvider"])
        insight = FacialPriorExtractor("insightface_2d106", session=session, batch_size=args.faces)
        rows.append(("insightface_2d106", "whole image, MobileNet-0.5 (random)", args.faces,
                     best_seconds(lambda: insight(images), args.repeats)))

    print(f"CPU threads: {torch.get_num_threads()}; {args.faces} images (512x512) per call; best of {args.repeats}")
    print(f"{'backend':<18} {'what':<42} {'faces/s':>8} {'ms/face':>8}")
    for backend, what, faces, seconds in rows:
        print(f"{backend:<18} {what:<42} {faces / seconds:>8.1f} {1000 * seconds / faces:>8.1f}")

    # Share of the prior in a full EmoLA forward at a small configuration.
    from transformers_emola import build_tiny_emola

    model, processor = build_tiny_emola(image_size=args.image_size, hidden_size=args.hidden,
                                        vision_hidden_size=args.hidden, num_hidden_layers=args.layers)
    prompt = processor.apply_chat_template([{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "What AUs are conveyed by this face?"}]}],
        add_generation_prompt=True)
    pil = [Image.fromarray(astronaut)] * args.faces
    priors = np.zeros((args.faces, 136), np.float32)

    def forward():
        inputs = processor(images=pil, text=[prompt] * args.faces, facial_priors=priors, return_tensors="pt")
        with torch.inference_mode():
            model(**inputs)

    t_forward = best_seconds(forward, args.repeats)
    print(f"\nTiny EmoLA (hidden {args.hidden}, {args.layers} layers, {args.image_size}px) processor + forward, "
          f"{args.faces} images: {1000 * t_forward:.0f} ms")
    per_face = {what: seconds / faces for _, what, faces, seconds in rows}
    fan_and_sfd = per_face["2D-FAN + flip, given box, batch 1"] + per_face["S3FD detector forward (512x512)"]
    pipelines = [("dlib (HOG detect + landmarks)", per_face["detect + 68 landmarks"] * args.faces),
                 ("face_alignment (S3FD + 2D-FAN with flip)", fan_and_sfd * args.faces),
                 ("insightface_2d106 (whole image)", per_face["whole image, MobileNet-0.5 (random)"] * args.faces)]
    print(f"{'prior backend':<42} {'prior ms':>9} {'prior share of prior + forward':>31}")
    for name, seconds in pipelines:
        print(f"{name:<42} {1000 * seconds:>9.0f} {100 * seconds / (seconds + t_forward):>30.1f}%")

if __name__ == "__main__":
    main()
