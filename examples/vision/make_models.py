#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""TorchScript files for examples/vision/vision.yaml, made with Debian's python3-torchvision.

THE WEIGHTS ARE RANDOM. Nothing can be downloaded where this runs, so every model keeps its
architecture's default random initialisation: the files have the real architectures, sizes
and speeds, but their boxes and labels mean nothing. Point `args.model` at your own trained
TorchScript files (the same export, see below) for real answers.

  python3 make_models.py OUTDIR [--only NAME,...]

Detectors are exported *raw*: backbone + head only, returning (box deltas [N,A,4], class
logits [N,A,91], anchors [A,4]) for a fixed input size; the plugin decodes the boxes against
the anchors and runs NMS itself (Debian ships no C++ build of torchvision's nms/roi_align
ops). Classifiers return ImageNet logits [N,1000]. Also writes coco.txt and imagenet.txt
(labels, from torchvision's metadata), example images (images/*.jpg, drawn here) and a
classifier's input as a tensor payload (tensors/crop224.tensor).
"""
import os
import sys

import torch
import torchvision
from torchvision.models import detection
from torchvision.models.detection.image_list import ImageList

DETECTORS = {
    # name: (constructor, input size)
    "ssdlite320": (lambda: detection.ssdlite320_mobilenet_v3_large(weights=None,
                                                                   weights_backbone=None), 320),
    "ssd300_vgg16": (lambda: detection.ssd300_vgg16(weights=None, weights_backbone=None), 300),
}
CLASSIFIERS = {
    "mobilenet_v3_small": torchvision.models.mobilenet_v3_small,
    "mobilenet_v3_large": torchvision.models.mobilenet_v3_large,
    "efficientnet_b0": torchvision.models.efficientnet_b0,
    "resnet18": torchvision.models.resnet18,
}


class RawSSD(torch.nn.Module):
    """An SSD's backbone and head, with its anchors for one input size."""

    def __init__(self, m, size: int):
        super().__init__()
        self.backbone = m.backbone
        self.head = m.head
        with torch.no_grad():
            x = torch.zeros(1, 3, size, size)
            feats = list(m.backbone(x).values())
            anchors = m.anchor_generator(ImageList(x, [(size, size)]), feats)[0]
        self.register_buffer("anchors", anchors)

    def forward(self, x: torch.Tensor):
        feats = list(self.backbone(x).values())
        out = self.head(feats)
        return out["bbox_regression"], out["cls_logits"], self.anchors


def export_detector(name: str, out: str) -> None:
    make, size = DETECTORS[name]
    torch.manual_seed(0)
    m = RawSSD(make().eval(), size).eval()
    with torch.no_grad():
        ts = torch.jit.trace(m, torch.rand(2, 3, size, size), check_trace=False)
        ts = torch.jit.freeze(ts)
        d, l, a = ts(torch.rand(3, 3, size, size))  # another batch size works too
        assert d.shape[0] == 3 and l.shape[2] == 91 and a.shape[1] == 4, (d.shape, l.shape)
    ts.save(os.path.join(out, name + ".pt"))


def export_classifier(name: str, out: str) -> None:
    torch.manual_seed(0)
    m = CLASSIFIERS[name](weights=None).eval()
    with torch.no_grad():
        ts = torch.jit.freeze(torch.jit.script(m))
        assert ts(torch.rand(2, 3, 224, 224)).shape == (2, 1000)
    ts.save(os.path.join(out, name + ".pt"))


def write_labels(out: str) -> None:
    coco = detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta["categories"]
    imagenet = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    for fname, cats in (("coco.txt", coco), ("imagenet.txt", imagenet)):
        with open(os.path.join(out, fname), "w") as f:
            f.write("\n".join(cats) + "\n")


def write_images(out: str, n: int = 8) -> None:
    """Synthetic street-ish pictures (coloured boxes on a gradient), JPEG: no licence needed."""
    from torchvision.io import encode_jpeg

    d = os.path.join(out, "images")
    os.makedirs(d, exist_ok=True)
    g = torch.Generator().manual_seed(17)
    for k in range(n):
        h, w = 480, 640
        y = torch.linspace(0, 1, h).view(1, h, 1)
        img = torch.cat([80 + 100 * y.expand(1, h, w), 90 + 80 * y.expand(1, h, w),
                         120 + 60 * y.expand(1, h, w)]).clone()
        for _ in range(3 + k % 4):
            bw, bh = int(torch.randint(60, 220, (1,), generator=g)), int(
                torch.randint(40, 160, (1,), generator=g))
            x0, y0 = int(torch.randint(0, w - bw, (1,), generator=g)), int(
                torch.randint(0, h - bh, (1,), generator=g))
            colour = torch.randint(0, 256, (3, 1, 1), generator=g).float()
            img[:, y0:y0 + bh, x0:x0 + bw] = colour
        data = encode_jpeg(img.clamp(0, 255).to(torch.uint8), quality=90)
        with open(os.path.join(d, f"street{k}.jpg"), "wb") as f:
            f.write(bytes(data.numpy().tobytes()))


def tensor_payload(t: torch.Tensor) -> bytes:
    """The tensor payload format (docs/vision.md): msgpack {dtype, shape, data}."""
    import struct
    names = {torch.uint8: "uint8", torch.float32: "float32", torch.int64: "int64"}
    dt = names[t.dtype].encode()
    out = bytearray(b"\x83")
    out += b"\xa5dtype" + bytes([0xa0 | len(dt)]) + dt
    out += b"\xa5shape" + bytes([0x90 | t.dim()])
    for d in t.shape:
        out += b"\xce" + struct.pack(">I", d)
    data = t.contiguous().numpy().tobytes()
    out += b"\xa4data\xc6" + struct.pack(">I", len(data)) + data
    return bytes(out)


def write_crop(out: str) -> None:
    """A 3x224x224 uint8 crop as a detector emits it: what the classifiers get."""
    g = torch.Generator().manual_seed(3)
    crop = torch.randint(0, 256, (3, 224, 224), generator=g, dtype=torch.uint8)
    d = os.path.join(out, "tensors")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "crop224.tensor"), "wb") as f:
        f.write(tensor_payload(crop))


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    only = sys.argv[3].split(",") if len(sys.argv) > 3 and sys.argv[2] == "--only" else None
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for name in DETECTORS:
        if only is None or name in only:
            print(f"make_models: {name} (random weights)", flush=True)
            export_detector(name, out)
    for name in CLASSIFIERS:
        if only is None or name in only:
            print(f"make_models: {name} (random weights)", flush=True)
            export_classifier(name, out)
    write_labels(out)
    write_images(out)
    write_crop(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
