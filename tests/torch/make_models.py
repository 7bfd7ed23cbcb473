#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Tiny TorchScript models for the torchscript backend's tests, written into OUTDIR.

Their outputs are known by construction, so a test can tell where every crop came from:
  det.pt        detector on 3x48x64: a 3x4 grid of 16x16 anchors; an anchor's score is the
                mean of channel 0 over its cell; outputs (boxes [N,12,4], scores [N,12,2]),
                class 0 the background
  det_coded.pt  the same, as raw outputs: (deltas [N,12,4] = 0, logits [N,12,2],
                anchors [12,4]), decoded by the plugin
  mean.pt       3x8x8 -> the per-channel mean [N,3] (postprocess none)
  lin.pt        3x8x8 -> 4 logits: 10 x (mean R, mean G, mean B, 0.5) (classify_topk)
  labels.txt    four labels for lin.pt
  corrupt.pt    not a model
Exit 77 (skip) when torch cannot be imported.
"""
import os
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print(f"make_models: no torch ({e}): skipped", file=sys.stderr)
    sys.exit(77)


def anchors() -> torch.Tensor:
    a = []
    for r in range(3):
        for c in range(4):
            a.append([c * 16.0, r * 16.0, c * 16.0 + 16.0, r * 16.0 + 16.0])
    return torch.tensor(a)


class Det(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("anchors", anchors())

    def forward(self, x: torch.Tensor):
        s = F.avg_pool2d(x[:, 0:1], 16).flatten(1)  # [N, 12], row-major cells
        boxes = self.anchors.unsqueeze(0).expand(x.shape[0], 12, 4)
        return boxes, torch.stack([1.0 - s, s], dim=2)


class DetCoded(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("anchors", anchors())

    def forward(self, x: torch.Tensor):
        s = F.avg_pool2d(x[:, 0:1], 16).flatten(1)
        deltas = torch.zeros(x.shape[0], 12, 4)
        logits = torch.stack([torch.zeros_like(s), 20.0 * (s - 0.5)], dim=2)
        return deltas, logits, self.anchors


class Mean(torch.nn.Module):
    def forward(self, x: torch.Tensor):
        return x.mean(dim=(2, 3))


class Lin(torch.nn.Module):
    def forward(self, x: torch.Tensor):
        m = x.mean(dim=(2, 3))
        return 10.0 * torch.cat([m, torch.full((x.shape[0], 1), 0.5)], dim=1)


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(out, exist_ok=True)
    torch.jit.script(Det()).save(os.path.join(out, "det.pt"))
    torch.jit.script(DetCoded()).save(os.path.join(out, "det_coded.pt"))
    torch.jit.script(Mean()).save(os.path.join(out, "mean.pt"))
    torch.jit.script(Lin()).save(os.path.join(out, "lin.pt"))
    with open(os.path.join(out, "labels.txt"), "w") as f:
        f.write("red\ngreen\nblue\n\"none\"\n")
    with open(os.path.join(out, "corrupt.pt"), "wb") as f:
        f.write(b"PK\x03\x04 this is not a TorchScript archive" * 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
