#include "zstd_filter.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* Decompresses a whole chunk. Uses the size recorded in the frame header when it
 * is small enough to trust, and otherwise streams into a buffer that grows with
 * the real output, so that a corrupt header cannot make us allocate gigabytes. */
static size_t zstd_decompress_chunk(size_t nbytes, size_t* buf_size, void** buf) {
  const unsigned long long claimed = ZSTD_getFrameContentSize(*buf, nbytes);
  if (claimed == ZSTD_CONTENTSIZE_ERROR) return 0;
  void* out = NULL;
  size_t out_size = 0;
  if (claimed != ZSTD_CONTENTSIZE_UNKNOWN && claimed <= ((size_t)1 << 28) &&
      ZSTD_findFrameCompressedSize(*buf, nbytes) == nbytes) {
    out_size = (size_t)claimed;
    out = malloc(out_size ? out_size : 1);
    if (!out) return 0;
    size_t r = ZSTD_decompress(out, out_size, *buf, nbytes);
    if (ZSTD_isError(r) || r != out_size) {
      free(out);
      return 0;
    }
  } else {
    ZSTD_DStream* ds = ZSTD_createDStream();
    if (!ds) return 0;
    size_t cap = nbytes * 4 + 4096;
    if (claimed != ZSTD_CONTENTSIZE_UNKNOWN && claimed < cap) cap = (size_t)claimed + 1;
    out = malloc(cap);
    if (!out) {
      ZSTD_freeDStream(ds);
      return 0;
    }
    ZSTD_inBuffer in = {*buf, nbytes, 0};
    ZSTD_outBuffer o = {out, cap, 0};
    for (;;) {
      size_t r = ZSTD_decompressStream(ds, &o, &in);
      if (ZSTD_isError(r)) goto fail;
      if (in.pos == in.size && o.pos < o.size) {
        if (r != 0) goto fail; /* input ended inside a frame: truncated */
        break;
      }
      if (o.pos == o.size) {
        if (cap >= FEDSEG_H5Z_ZSTD_MAX_CHUNK) goto fail;
        size_t ncap = cap * 2 > FEDSEG_H5Z_ZSTD_MAX_CHUNK ? FEDSEG_H5Z_ZSTD_MAX_CHUNK : cap * 2;
        void* n = realloc(out, ncap);
        if (!n) goto fail;
        out = n;
        cap = ncap;
        o.dst = out;
        o.size = cap;
      }
    }
    ZSTD_freeDStream(ds);
    out_size = o.pos;
    goto done;
  fail:
    ZSTD_freeDStream(ds);
    free(out);
    return 0;
  }
done:
  free(*buf);
  *buf = out;
  *buf_size = out_size ? out_size : 1;
  return out_size;
}

size_t fedseg_h5z_zstd_compress(int level, const void* src, size_t n, void* dst, size_t cap) {
  /* 0 means zstd's default (3); out-of-range levels are clamped. */
  if (level == 0) level = 3;
  if (level < ZSTD_minCLevel()) level = ZSTD_minCLevel();
  if (level > ZSTD_maxCLevel()) level = ZSTD_maxCLevel();
  /* One compression context per thread, reused across chunks: creating one per
   * chunk allocated (and page-faulted) its tables again every time. */
  static _Thread_local ZSTD_CCtx* cctx = NULL;
  if (!cctx) cctx = ZSTD_createCCtx();
  if (!cctx) return 0;
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  /* A content checksum in every frame: a flipped bit in a stored chunk fails the
   * read instead of decoding to wrong values. */
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  size_t r = ZSTD_compress2(cctx, dst, cap, src, n);
  return ZSTD_isError(r) ? 0 : r;
}

size_t fedseg_h5z_zstd_bound(size_t n) { return ZSTD_compressBound(n); }

static size_t zstd_filter(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[], size_t nbytes,
                          size_t* buf_size, void** buf) {
  if (flags & H5Z_FLAG_REVERSE) return zstd_decompress_chunk(nbytes, buf_size, buf);

  /* cd_values[0] is the level as a C int: negative levels (zstd --fast=N) are
   * stored as their two's complement. */
  int level = cd_nelmts > 0 ? (int)cd_values[0] : 3;
  size_t bound = ZSTD_compressBound(nbytes);
  void* out = malloc(bound);
  if (!out) return 0;
  size_t r = fedseg_h5z_zstd_compress(level, *buf, nbytes, out, bound);
  if (r == 0) {
    free(out);
    return 0;
  }
  free(*buf);
  *buf = out;
  *buf_size = bound;
  return r;
}

const H5Z_class2_t fedseg_h5z_zstd_class = {
    H5Z_CLASS_T_VERS,
    (H5Z_filter_t)FEDSEG_H5Z_FILTER_ZSTD,
    1, /* encoder present */
    1, /* decoder present */
    "Zstandard compression: http://www.zstd.net",
    NULL, /* can_apply */
    NULL, /* set_local */
    zstd_filter,
};
