/* What nvkv's spdk backend uses of SPDK: the NVMe driver and the env layer.
 * build.rs generates bindings for an allow-list of these headers' items. */
#include <spdk/stdinc.h>
#include <spdk/env.h>
#include <spdk/nvme.h>
