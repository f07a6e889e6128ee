/* The perfetto export's hot part (export/perfetto.py): each selected call
 * as two TracePackets of a thread's packet sequence, a TrackEvent slice
 * BEGIN at its start and END at its end, with timestamps as deltas on the
 * sequence's incremental clock and the function's name interned by its
 * first BEGIN. Python writes the packets that describe tracks and clocks;
 * the tags come from Perfetto's descriptors (struct ct_pf), so no field
 * number is spelled here. Rows pass the -F/-N/-D/-t selection of the text
 * kernels (fmt_pass). */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>
#include "conv.h"

/* Room a packet takes besides the name it may carry: a generous bound
 * (each of at most 9 tags and 9 varints takes 10 bytes at most). */
#define PF_PACKET_MAX 192

static inline CT_NOINST size_t vlen(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline CT_NOINST char *var(char *o, uint64_t v) {
    while (v >= 0x80) {
        *o++ = (char)(v | 0x80);
        v >>= 7;
    }
    *o++ = (char)v;
    return o;
}

/* A varint field: its tag, then its value. */
static inline CT_NOINST size_t flen(uint32_t tag, uint64_t v) { return vlen(tag) + vlen(v); }

static inline CT_NOINST char *field(char *o, uint32_t tag, uint64_t v) { return var(var(o, tag), v); }

/* One packet at `at`: BEGIN of function f (its name with it when `intern`),
 * or END when f < 0. */
static CT_NOINST char *packet(struct ct_pf *p, char *o, int64_t at, int32_t f, int intern) {
    uint64_t delta = (uint64_t)(at - p->last), iid = (uint64_t)f + 1;
    size_t te = f < 0 ? flen(p->type, p->end) : flen(p->type, p->begin) + flen(p->name_iid, iid);
    size_t len = flen(p->timestamp, delta) + flen(p->seq_id, p->seq) + flen(p->seq_flags, p->needs) +
                 vlen(p->track_event) + vlen(te) + te;
    size_t nl = 0, en = 0, in = 0;
    if (intern) {
        nl = p->off[f + 1] - p->off[f];
        en = flen(p->iid, iid) + vlen(p->name) + vlen(nl) + nl;
        in = vlen(p->event_names) + vlen(en) + en;
        len += vlen(p->interned_data) + vlen(in) + in;
    }
    o = var(var(o, p->packet), len);
    o = field(o, p->timestamp, delta);
    o = field(o, p->seq_id, p->seq);
    o = var(var(o, p->track_event), te);
    if (f < 0) {
        o = field(o, p->type, p->end);
    } else {
        o = field(o, p->type, p->begin);
        o = field(o, p->name_iid, iid);
    }
    if (intern) {
        o = var(var(o, p->interned_data), in);
        o = var(var(o, p->event_names), en);
        o = field(o, p->iid, iid);
        o = var(var(o, p->name), nl);
        memcpy(o, p->blob + p->off[f], nl);
        o += nl;
    }
    o = field(o, p->seq_flags, p->needs);
    p->last = at;
    return o;
}

/* END packets until `depth` calls are open; 0 when done, -1 when out is
 * too full. Time never steps back on a track: an end before the latest
 * timestamp (a child that outlasted its parent) is clamped to it. */
static CT_NOINST int close_to(struct ct_pf *p, uint64_t depth, char *out, size_t cap, size_t *used) {
    char *o = out + *used;
    int full = 0;
    while (p->sp > depth) {
        if ((size_t)(o - out) + PF_PACKET_MAX > cap) {
            full = 1;
            break;
        }
        int64_t end = p->ends[--p->sp];
        o = packet(p, o, end > p->last ? end : p->last, -1, 0);
    }
    *used = (size_t)(o - out);
    return -full;
}

/* Encode rows from..n into out (cap bytes; *used grows). Returns the next
 * row to give: n when all were done, less when out is nearly full (flush
 * and call again from there), or (size_t)-1 when the stack in p->ends is
 * too small (the caller sizes it from the batch's depths). */
CT_EXPORT CT_NOINST size_t ct_pf_rows(struct ct_fmt *r, struct ct_pf *p, const int32_t *func,
                                      const int32_t *depth, const int64_t *start, const int64_t *dur,
                                      size_t from, size_t n, char *out, size_t cap, size_t *used) {
    size_t i = from;
    for (; i < n; i++) {
        int32_t f = func[i];
        int64_t shown = p->pending;
        if (shown < 0) {
            if (!fmt_pass(r, f, depth[i], dur[i], &shown))
                continue;
            r->shown++;
            p->pending = shown;
        }
        if (close_to(p, (uint64_t)shown, out, cap, used) < 0)
            break;
        if (p->sp >= p->cap)
            return (size_t)-1;
        int intern = !p->interned[f];
        if (*used + PF_PACKET_MAX + (intern ? p->off[f + 1] - p->off[f] : 0) > cap)
            break;
        int64_t at = start[i] > p->last ? start[i] : p->last;
        *used = (size_t)(packet(p, out + *used, at, f, intern) - out);
        p->interned[f] = 1;
        int64_t end = start[i] + dur[i];
        p->ends[p->sp++] = end > at ? end : at;
        p->pending = -1;
    }
    return i;
}

/* The END packets of the calls still open when the thread's calls are
 * done: 0 when all are written, nonzero when out filled first (flush and
 * call again). */
CT_EXPORT CT_NOINST int ct_pf_finish(struct ct_pf *p, char *out, size_t cap, size_t *used) {
    return close_to(p, 0, out, cap, used) < 0;
}
