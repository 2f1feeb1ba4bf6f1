/* The loadable HDF5 plugin: exports filter 32015 to any HDF5 program that finds
 * this library through HDF5_PLUGIN_PATH. Links libzstd only, not libhdf5. */
#include <H5PLextern.h>

#include "zstd_filter.h"

H5PL_type_t H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }
const void* H5PLget_plugin_info(void) { return &fedseg_h5z_zstd_class; }
