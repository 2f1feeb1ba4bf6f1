/* The HDF5 filter 32015 (Zstandard, as registered with The HDF Group), built on
 * libzstd. The same source is compiled into libfedseg_h5 (registered in-process)
 * and into the loadable plugin libh5zstd_fedseg.so, so that h5py, h5dump and any
 * HDF5 program read fedseg files with HDF5_PLUGIN_PATH pointing at it.
 * cd_values[0], when present, is the compression level (default 3).
 * Must not depend on the rest of fedseg: the plugin is this file alone. */
#pragma once

#include <hdf5.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FEDSEG_H5Z_FILTER_ZSTD 32015

extern const H5Z_class2_t fedseg_h5z_zstd_class;

/* Largest chunk the filter will produce when decompressing (HDF5's own limit on a
 * chunk is 4 GiB). Larger claims are treated as corrupt data. */
#define FEDSEG_H5Z_ZSTD_MAX_CHUNK ((size_t)0xFFFFFFFFu)

/* Compresses n bytes exactly as the filter does (level handling, content checksum)
 * into dst, which holds cap >= fedseg_h5z_zstd_bound(n) bytes; returns the frame's
 * size, 0 on failure. Thread-safe (one context per thread). For writers that store
 * chunks with H5Dwrite_chunk, bypassing HDF5's filter pipeline. */
size_t fedseg_h5z_zstd_compress(int level, const void* src, size_t n, void* dst, size_t cap);
size_t fedseg_h5z_zstd_bound(size_t n);

#ifdef __cplusplus
}
#endif
