"""Compares what fedseg::nifti reads (through fedseg-niftidump) with nibabel.

Run with /usr/bin/python3 (Debian's python3-nibabel is installed for it only).

  nifti_compare.py corpus NIFTIDUMP WORKDIR DIR...
      every NIfTI file under each DIR (.nii, .nii.gz, .hdr, .hdr.gz, and .img of a pair):
      data after scaling and affine equal (relative 1e-5) or both reject. Missing DIRs
      are reported and skipped. Exit 1 on any mismatch.
  nifti_compare.py roundtrip NIFTIDUMP WORKDIR
      fedseg writes -> nibabel reads, and nibabel writes -> fedseg reads.
"""
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import nibabel as nib

RTOL = 1e-5


def run_dump(tool, path, prefix):
    """Returns (exit code, header dict or None, float64 data or None, stderr)."""
    p = subprocess.run([tool, path, "--out", prefix], capture_output=True, text=True)
    if p.returncode != 0:
        return p.returncode, None, None, p.stderr.strip()
    with open(prefix + ".json") as f:
        hdr = json.load(f)
    data = np.fromfile(prefix + ".f32", dtype="<f4").astype(np.float64)
    return 0, hdr, data, p.stderr.strip()


def data_mismatch(ours, theirs):
    """None when equal within RTOL (zeros, NaN and inf exactly), else a description."""
    theirs = np.asarray(theirs, dtype=np.float64).reshape(-1, order="F")
    if ours.shape != theirs.shape:
        return "voxel count %d != nibabel's %d" % (ours.size, theirs.size)
    both_nan = np.isnan(ours) & np.isnan(theirs)
    close = np.isclose(ours, theirs, rtol=RTOL, atol=0.0, equal_nan=True) | both_nan | (ours == theirs)
    if close.all():
        return None
    bad = np.flatnonzero(~close)
    i = bad[0]
    return "%d voxels differ, first at %d: %r vs nibabel %r" % (bad.size, i, ours[i], theirs[i])


def affine_mismatch(ours, theirs):
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    atol = RTOL * max(1.0, float(np.abs(theirs).max()))
    if np.allclose(ours, theirs, rtol=RTOL, atol=atol):
        return None
    return "affine differs:\n  fedseg  %s\n  nibabel %s" % (
        np.array2string(ours, precision=6).replace("\n", "\n          "),
        np.array2string(theirs, precision=6).replace("\n", "\n          "))


def nib_version(path):
    """1 or 2 from sizeof_hdr (either byte order), None when not recognisable."""
    try:
        with nib.openers.ImageOpener(path) as f:
            b = f.read(4)
    except Exception:
        return None
    if len(b) < 4:
        return None
    for order in ("<", ">"):
        v = int(np.frombuffer(b, dtype=order + "i4")[0])
        if v == 348:
            return 1
        if v == 540:
            return 2
    return None


def nib_read(path):
    """What nibabel makes of path as a NIfTI file: (img, data, affine) or raises."""
    lower = path.lower()
    pair = lower.endswith((".hdr", ".hdr.gz", ".img", ".img.gz"))
    if lower.endswith((".img", ".img.gz")):
        v = nib_version(path[: -len(".img.gz")] + ".hdr" if lower.endswith(".gz") else path[:-4] + ".hdr")
    else:
        v = nib_version(path)
    if v is None:
        raise ValueError("not a NIfTI header (sizeof_hdr)")
    klass = {(1, False): nib.Nifti1Image, (2, False): nib.Nifti2Image,
             (1, True): nib.Nifti1Pair, (2, True): nib.Nifti2Pair}[(v, pair)]
    img = klass.from_filename(path)
    dt = img.get_data_dtype()
    if dt.fields is not None or dt.kind not in "uif":
        raise ValueError("datatype %s" % dt)
    data = np.asanyarray(img.dataobj)
    return img, data, img.affine


def header_only_mismatch(tool, path, prefix):
    p = subprocess.run([tool, path, "--header-only", "--out", prefix], capture_output=True, text=True)
    if p.returncode != 0:
        return "fedseg --header-only exited %d: %s" % (p.returncode, p.stderr.strip())
    with open(prefix + ".json") as f:
        hdr = json.load(f)
    klass = nib.Nifti2Pair if nib_version(path) == 2 else nib.Nifti1Pair
    with nib.openers.ImageOpener(path) as f:
        h = klass.header_class.from_fileobj(f)
    problems = []
    if tuple(hdr["shape"]) != tuple(h.get_data_shape()):
        problems.append("shape %s != %s" % (hdr["shape"], h.get_data_shape()))
    m = affine_mismatch(hdr["affine"], h.get_best_affine())
    if m:
        problems.append(m)
    return "; ".join(problems) or None


def find_files(root):
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            l = name.lower()
            if l.endswith((".nii", ".nii.gz", ".hdr", ".hdr.gz", ".img", ".img.gz")):
                out.append(os.path.join(dirpath, name))
    return sorted(out)


def corpus(tool, work, dirs):
    matched, both_rejected, failures, skipped_dirs, header_only = [], [], [], [], []
    for d in dirs:
        if not os.path.isdir(d):
            skipped_dirs.append(d)
            print("SKIP corpus %s: not present" % d)
            continue
        files = find_files(d)
        print("corpus %s: %d NIfTI-named files" % (d, len(files)))
        for n, path in enumerate(files):
            prefix = os.path.join(work, "c%d_%d" % (len(matched) + len(both_rejected) + len(failures), n))
            rc, hdr, ours, err = run_dump(tool, path, prefix)
            if rc not in (0, 65, 66):
                failures.append((path, "fedseg-niftidump exited %d: %s" % (rc, err)))
                print("FAIL   %s: fedseg exit %d (crash?) %s" % (path, rc, err))
                continue
            try:
                img, theirs, aff = nib_read(path)
                nib_err = None
            except Exception as e:  # nibabel rejects the file
                nib_err = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            if rc != 0 and nib_err is not None:
                both_rejected.append(path)
                print("REJECT %s\n         fedseg (exit %d): %s\n         nibabel: %s" % (path, rc, err.splitlines()[0] if err else "", nib_err))
                if rc == 66 and path.lower().endswith((".hdr", ".hdr.gz")):
                    # A header without its image: compare what both make of the header alone.
                    m = header_only_mismatch(tool, path, prefix)
                    if m:
                        failures.append((path, "header only: " + m))
                        print("FAIL   %s (header only): %s" % (path, m))
                    else:
                        header_only.append(path)
                        print("         header alone: shape and affine match nibabel's")
                continue
            if rc != 0:
                failures.append((path, "fedseg rejects (exit %d: %s), nibabel reads it" % (rc, err)))
                print("FAIL   %s: fedseg rejects (exit %d: %s), nibabel reads it" % (path, rc, err))
                continue
            if nib_err is not None:
                failures.append((path, "fedseg reads it, nibabel rejects: %s" % nib_err))
                print("FAIL   %s: fedseg reads it, nibabel rejects: %s" % (path, nib_err))
                continue
            problems = []
            if tuple(hdr["shape"]) != tuple(theirs.shape):
                problems.append("shape %s != nibabel's %s" % (hdr["shape"], theirs.shape))
            m = data_mismatch(ours, theirs)
            if m:
                problems.append(m)
            m = affine_mismatch(hdr["affine"], aff)
            if m:
                problems.append(m)
            # The stored transforms too, where nibabel computes them.
            h = img.header
            if hdr["sform_code"] > 0:
                m = affine_mismatch(hdr["sform"], h.get_sform())
                if m:
                    problems.append("sform: " + m)
            if hdr["qform_code"] > 0:
                try:
                    q = h.get_qform()
                except Exception:
                    q = None
                if q is not None:
                    m = affine_mismatch(hdr["qform"], q)
                    if m:
                        problems.append("qform: " + m)
            if problems:
                failures.append((path, "; ".join(problems)))
                print("FAIL   %s:\n  %s" % (path, "\n  ".join(problems)))
            else:
                matched.append(path)
                print("MATCH  %s  %s %s scl=(%g,%g) q/s codes %d/%d%s" % (
                    path, "x".join(map(str, hdr["shape"])), hdr["datatype"], hdr["scl_slope"], hdr["scl_inter"],
                    hdr["qform_code"], hdr["sform_code"], " qform!=sform" if hdr["qform_sform_disagree"] else ""))
    print("\nsummary: %d matched nibabel, %d rejected by both (%d of them header-only pairs whose headers match),"
          " %d mismatches, %d corpora absent"
          % (len(matched), len(both_rejected), len(header_only), len(failures), len(skipped_dirs)))
    for path, why in failures:
        print("MISMATCH %s: %s" % (path, why))
    return 1 if failures else 0


# ------------------------------------------------------------------------------------
# Round trips

DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


def oblique_affine(seed):
    rng = np.random.default_rng(seed)
    # A rotation (from a random quaternion), positive zooms, an offset.
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    R = nib.quaternions.quat2mat(q)
    Z = np.diag(rng.uniform(0.5, 3.0, 3))
    if seed % 2:
        Z[2, 2] *= -1  # left-handed: qfac -1
    A = np.eye(4)
    A[:3, :3] = R @ Z
    A[:3, 3] = rng.uniform(-120, 120, 3)
    return A


def values(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    if dt.kind == "f":
        v = rng.standard_normal(n) * 1000
    else:
        info = np.iinfo(dt)
        lo = max(info.min, -(2 ** 40))
        hi = min(info.max, 2 ** 40)
        v = rng.integers(lo, hi, size=n, endpoint=True, dtype=np.int64 if dt != np.uint64 else np.uint64)
        v[:4] = [info.min, info.max, 0, 1] if n >= 4 else v[:4]
    return v.astype(dt).reshape(shape, order="F")


def roundtrip(tool, work):
    failures = []
    count = 0

    def check(label, problems):
        nonlocal count
        count += 1
        if problems:
            failures.append(label)
            print("FAIL  %s: %s" % (label, "; ".join(problems)))
        else:
            print("ok    %s" % label)

    # 1. fedseg writes, nibabel reads.
    cases = []
    for i, dt in enumerate(DTYPES):
        cases.append((dt, (7, 5, 3), 1, ".nii", 0.0, 0.0))
    cases += [
        ("int16", (17, 13, 9, 3), 1, ".nii.gz", 0.5, -20.0),
        ("float32", (11, 9, 6), 2, ".nii", 0.0, 0.0),
        ("int16", (9, 8, 7, 2, 2), 2, ".nii.gz", 2.0, 3.0),
        ("uint8", (240, 240, 155), 1, ".nii.gz", 0.0, 0.0),
        ("float64", (5,), 1, ".nii", 0.0, 0.0),
        ("int32", (4, 3), 2, ".nii.gz", 1.0, 0.0),
    ]
    for k, (dt, shape, version, ext, slope, inter) in enumerate(cases):
        label = "fedseg->nibabel %s %s v%d%s scl=(%g,%g)" % (dt, "x".join(map(str, shape)), version, ext, slope, inter)
        x = values(dt, shape, k)
        aff = oblique_affine(k)
        raw = os.path.join(work, "w%d.raw" % k)
        x.astype(x.dtype.newbyteorder("<")).reshape(-1, order="F").tofile(raw)
        meta = os.path.join(work, "w%d.json" % k)
        with open(meta, "w") as f:
            json.dump({"shape": list(shape), "dtype": dt, "affine": aff.tolist(), "xform_code": 1 + k % 4,
                       "scl_slope": slope, "scl_inter": inter, "version": version}, f)
        out = os.path.join(work, "w%d%s" % (k, ext))
        p = subprocess.run([tool, "--write", out, "--raw", raw, "--meta", meta], capture_output=True, text=True)
        if p.returncode != 0:
            check(label, ["fedseg-niftidump --write exited %d: %s" % (p.returncode, p.stderr)])
            continue
        problems = []
        img = nib.load(out)
        want_class = nib.Nifti1Image if version == 1 else nib.Nifti2Image
        if type(img) is not want_class:
            problems.append("nibabel loads it as %s" % type(img).__name__)
        if img.get_data_dtype() != np.dtype(dt):
            problems.append("stored dtype %s" % img.get_data_dtype())
        raw_back = np.asanyarray(img.dataobj.get_unscaled())
        if raw_back.shape != shape or not np.array_equal(raw_back, x):
            problems.append("raw voxels differ")
        s = slope if slope != 0 else 1.0
        i_ = inter if slope != 0 else 0.0
        m = data_mismatch((x.astype(np.float64) * s + i_).reshape(-1, order="F"), np.asanyarray(img.dataobj))
        if m:
            problems.append("scaled: " + m)
        m = affine_mismatch(aff, img.affine)
        if m:
            problems.append(m)
        m = affine_mismatch(aff, img.header.get_qform())  # the qform fedseg derived
        if m:
            problems.append("qform: " + m)
        if int(img.header["sform_code"]) != 1 + k % 4 or int(img.header["qform_code"]) != 1 + k % 4:
            problems.append("xform codes %d/%d" % (img.header["qform_code"], img.header["sform_code"]))
        check(label, problems)

    # 2. nibabel writes, fedseg reads.
    variants = []
    for k, dt in enumerate(DTYPES):
        variants.append((dt, (6, 5, 4), "nii", "<", 1, None))
    variants += [
        ("int16", (13, 11, 7, 2), "nii.gz", ">", 1, (0.25, 128.0)),
        ("float32", (9, 8, 7), "nii", ">", 2, None),
        ("int32", (8, 7, 6), "nii.gz", ">", 1, (1.5, -3.0)),
        ("uint16", (10, 9, 8), "hdr", "<", 1, None),
        ("int16", (10, 9, 8), "hdr.gz", ">", 2, (2.0, 1.0)),
        ("float64", (12, 10, 3, 2), "nii.gz", "<", 2, None),
        ("uint8", (30, 20, 10), "multi.nii.gz", "<", 1, None),
        ("int16", (30, 20, 10), "qonly.nii", "<", 1, None),
        ("int16", (30, 20, 10), "noxform.nii", "<", 1, None),
    ]
    for k, (dt, shape, ext, order, version, scl) in enumerate(variants):
        label = "nibabel->fedseg %s %s %s-endian v%d .%s%s" % (
            dt, "x".join(map(str, shape)), "big" if order == ">" else "little", version, ext,
            " scl=%s" % (scl,) if scl else "")
        x = values(dt, shape, 100 + k).astype(np.dtype(dt).newbyteorder(order))
        aff = oblique_affine(100 + k)
        klass = {1: nib.Nifti1Image, 2: nib.Nifti2Image}[version]
        if ext.startswith("hdr"):
            klass = {1: nib.Nifti1Pair, 2: nib.Nifti2Pair}[version]
        hdr = klass.header_class(endianness=order)
        img = klass(x, aff, header=hdr)
        img.set_data_dtype(np.dtype(dt).newbyteorder(order))
        if scl:
            img.header.set_slope_inter(*scl)
        if ext == "qonly.nii":
            img.set_sform(None, code=0)
        if ext == "noxform.nii":
            img.set_sform(None, code=0)
            img.set_qform(None, code=0)
        path = os.path.join(work, "n%d.%s" % (k, ext.replace("multi.", "").replace("qonly.", "").replace("noxform.", "")))
        if scl:
            # Keep the given scaling: nibabel writes the data array's values unscaled
            # when the header's slope/inter are set and the dtype is the array's own.
            img.dataobj  # noqa: B018
        nib.save(img, path)
        if ext == "multi.nii.gz":
            # Re-pack as a multi-member gzip stream: header + part of the data, then the rest.
            with gzip.open(path, "rb") as f:
                blob = f.read()
            cut = 352 + 1234
            with open(path, "wb") as f:
                f.write(gzip.compress(blob[:cut]) + gzip.compress(blob[cut:]))
        back = nib.load(path)
        theirs = back.get_fdata(dtype=np.float64)
        paths = [path]
        if ext.startswith("hdr"):
            paths.append(path.replace(".hdr", ".img"))  # fedseg finds the header from the image too
        for pth in paths:
            prefix = os.path.join(work, "r%d" % k)
            rc, h, ours, err = run_dump(tool, pth, prefix)
            problems = []
            if rc != 0:
                problems.append("fedseg rejects it (exit %d): %s" % (rc, err))
            else:
                if tuple(h["shape"]) != tuple(theirs.shape):
                    problems.append("shape %s" % h["shape"])
                m = data_mismatch(ours, theirs)
                if m:
                    problems.append(m)
                m = affine_mismatch(h["affine"], back.affine)
                if m:
                    problems.append(m)
                if h["big_endian"] != (order == ">") or h["version"] != version:
                    problems.append("endianness/version %s/%s" % (h["big_endian"], h["version"]))
                if h["datatype"] != dt:
                    problems.append("datatype %s" % h["datatype"])
            check(label + ("" if pth == path else " (opened by its .img)"), problems)

    print("\nround trips: %d checks, %d failed" % (count, len(failures)))
    return 1 if failures else 0


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    cmd, tool, work = sys.argv[1], sys.argv[2], sys.argv[3]
    if cmd == "corpus":
        return corpus(tool, work, sys.argv[4:])
    if cmd == "roundtrip":
        return roundtrip(tool, work)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
