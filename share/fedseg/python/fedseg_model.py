"""fedseg's segmentation model in PyTorch, and a loader for fedseg model files.

The same network as lib/nn/model.h (fedseg-init, fedseg-train), with the same
parameter names, so that data scientists can use a federation's model in Python:

    import fedseg_model
    model, meta = fedseg_model.load("rounds/12/global.h5")   # kind global or checkpoint
    model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(x))     # x: (N, 4, Z, Y, X), z-scored as fedseg-prep does
    # probs[:, i] is region meta["architecture"]["regions"][i]: ET, TC, WT

Reading fedseg's HDF5 files needs the zstd filter plugin that fedseg builds and
installs (HDF5_PLUGIN_PATH=/usr/local/lib/fedseg/hdf5-plugins, or
<build>/hdf5-plugins); set it before h5py is imported. Verify the file's
signature first (fedseg-verify, or minisign -Vm FILE -p aggregator/minisign.pub).

Needs torch, h5py and numpy (Debian: python3-torch python3-h5py python3-numpy).
"""

import json

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResBlock(nn.Module):
    """y = LReLU(IN(conv1 x)); dropout; y = IN(conv2 y); out = LReLU(y + skip(x))."""

    def __init__(self, cin, cout, stride, dropout, slope):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm3d(cout, affine=True, track_running_stats=False)
        self.conv2 = nn.Conv3d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm3d(cout, affine=True, track_running_stats=False)
        self.skip = nn.Conv3d(cin, cout, 1, stride=stride, bias=False) if (cin != cout or stride != 1) else None
        self.dropout = dropout
        self.slope = slope

    def forward(self, x):
        y = F.leaky_relu(self.norm1(self.conv1(x)), self.slope)
        if self.dropout > 0:
            y = F.dropout(y, self.dropout, self.training)
        y = self.norm2(self.conv2(y))
        y = y + (self.skip(x) if self.skip is not None else x)
        return F.leaky_relu(y, self.slope)


class ResUNet(nn.Module):
    """3D residual U-Net; forward() returns logits, one sigmoid output per region."""

    def __init__(self, arch):
        super().__init__()
        if arch.get("name") != "resunet3d":
            raise ValueError("not a resunet3d architecture: %r" % arch.get("name"))
        self.arch = dict(arch)
        base, depth = arch["base_filters"], arch["depth"]
        drop, slope = arch["dropout"], arch["negative_slope"]
        ch = [base << l for l in range(depth + 1)]
        self.enc = nn.ModuleList(
            [ResBlock(arch["in_channels"] if l == 0 else ch[l - 1], ch[l], 1 if l == 0 else 2, drop, slope)
             for l in range(depth + 1)])
        self.up = nn.ModuleList([nn.ConvTranspose3d(ch[l + 1], ch[l], 2, stride=2) for l in range(depth)])
        self.dec = nn.ModuleList([ResBlock(2 * ch[l], ch[l], 1, drop, slope) for l in range(depth)])
        self.head = nn.Conv3d(ch[0], arch["out_channels"], 1)

    def forward(self, x):
        depth = self.arch["depth"]
        skips = []
        h = x
        for l in range(depth + 1):
            h = self.enc[l](h)
            if l < depth:
                skips.append(h)
        for l in range(depth - 1, -1, -1):
            h = self.up[l](h)
            h = self.dec[l](torch.cat([h, skips[l]], 1))
        return self.head(h)


def load(path, group="params"):
    """Builds the model from a fedseg model file (its `architecture` attribute) and
    loads /params. Returns (model, metadata dict of the root attributes)."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        if meta.get("kind") not in ("global", "checkpoint"):
            raise ValueError("%s: kind %r is not a model" % (path, meta.get("kind")))
        arch = json.loads(meta["architecture"])
        model = ResUNet(arch)
        state = model.state_dict()
        names = set()
        f[group].visititems(lambda n, o: names.add(n) if isinstance(o, h5py.Dataset) else None)
        if names != set(state):
            raise ValueError("%s: tensors %s differ from the model's" % (path, sorted(names ^ set(state))[:5]))
        for name in state:
            value = torch.from_numpy(np.asarray(f[group][name], dtype=np.float32))
            if value.shape != state[name].shape:
                raise ValueError("%s: %s has shape %s, the model needs %s" % (path, name, tuple(value.shape),
                                                                            tuple(state[name].shape)))
            state[name] = value
        model.load_state_dict(state)
    meta["architecture"] = arch
    return model, meta
