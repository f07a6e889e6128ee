/* Opening and closing a process's raw stream: the header of the first file,
 * the chunk size, and the first META records. Where the bytes go is
 * chunks.c; the files themselves (and rolling parts) parts.c. */
#define _GNU_SOURCE
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "ct.h"

/* Rolling output rolls when a chunk fills once the part holds the interval's
 * calls: chunks of a quarter of a part or less (16 KiB at least) keep parts
 * within about a quarter of the interval asked for. */
static CT_NOINST size_t chunk_size(void) {
    size_t size = ct_cfg.chunk_size;
    if (!ct_cfg.flush_interval)
        return size;
    uint64_t want = ct_cfg.flush_interval * 4;   /* 16 bytes a call, 4 chunks a part */
    size_t fit = 16 * 1024;
    while (fit * 2 <= want && fit * 2 <= size)
        fit *= 2;
    return fit < size ? fit : size;
}

CT_NOINST int ct_stream_open(pid_t ppid) {
    ct_chunk_bytes = chunk_size();
    ct_parts_reset();
    ct_chunks_reset();
    struct ct_part *pt = ct_part_open(ct_cfg.flush_interval ? 1 : 0);
    if (!pt)
        return -1;
    struct ct_header *h = pt->hdr;
    h->version = CT_VERSION;
    h->header_size = CT_HEADER_SIZE;
    h->chunk_size = (uint32_t)ct_chunk_bytes;
    h->pid = (int32_t)getpid();
    h->ppid = (int32_t)ppid;
    h->main_tid = (int32_t)syscall(SYS_gettid);
    h->max_depth = ct_cfg.max_depth;
    h->flags = (ct_cfg.capture_args ? CT_FLAG_CAPTURE_ARGS : 0) | (ct_cfg.pretty ? CT_FLAG_PRETTY : 0) |
               (ct_cfg.start_off ? CT_FLAG_START_OFF : 0) | (ct_cfg.bare ? CT_FLAG_BARE : 0);
    h->next_offset = CT_HEADER_SIZE;
    h->part = pt->index;
    h->keep = ct_cfg.rolling ? (uint32_t)ct_cfg.keep : 0;
    h->interval_calls = ct_cfg.flush_interval;
    h->max_size = ct_cfg.max_size;
    ct_clock_init(h);
    memcpy(h->magic, CT_MAGIC, 8);
    ct_part_set(pt);
    ct_meta_start();
    ct_log("recording to %s (clock %s, %.4f ns/tick, %zu KiB chunks)", pt->path,
           h->clock == CT_CLOCK_TSC ? "tsc" : "monotonic", h->ns_per_tick, ct_chunk_bytes / 1024);
    return 0;
}

/* After fork() the child must not touch the parent's files or mappings. */
CT_NOINST void ct_stream_close(void) {
    ct_pool_reset();
    ct_chunks_reset();
    ct_meta_reset();
    ct_parts_close();
}
