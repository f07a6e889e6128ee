/* Text kernels for replay and the chrome export (trace/kernels.py): the
 * -F/-N/-D/-t selection of analysis/paths.select and the line format of
 * cli/replay.py and export/chrome.py, byte for byte, in C. A call with
 * captured values (args, return) is handed back to Python to format. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "conv.h"

#define PUT(s, n) (memcpy(o, (s), (n)), o += (n))
#define LIT(s) PUT(s, sizeof(s) - 1)

/* analysis/units.fmt_ns, right-aligned in 11 columns. Python rounds the
 * double ns/scale to 3 decimals; away from a tie the integer rounding below
 * is the same, and a tie is left to printf, which rounds as Python does. */
static CT_NOINST char *put_ns(char *o, int64_t ns) {
    char t[40];
    int n;
    if (ns < 1000) {
        n = snprintf(t, sizeof t, "%lld ns", (long long)ns);
    } else {
        int64_t unit = ns < 1000000 ? 1 : ns < 1000000000 ? 1000 : 1000000;
        const char *name = ns < 1000000 ? " us" : ns < 1000000000 ? " ms" : " s";
        int64_t q = ns / unit, r = ns % unit;
        if (unit > 1 && 2 * r == unit) {
            n = snprintf(t, sizeof t, "%.3f%s", (double)ns / (double)(unit * 1000), name);
        } else {
            q += unit > 1 && 2 * r > unit;
            n = snprintf(t, sizeof t, "%lld.%03lld%s", (long long)(q / 1000), (long long)(q % 1000), name);
        }
    }
    for (int i = n; i < 11; i++)
        *o++ = ' ';
    PUT(t, (size_t)n);
    return o;
}

static CT_NOINST char *put_us(char *o, int64_t ns) {
    return o + sprintf(o, "%lld.%03lld", (long long)(ns / 1000), (long long)(ns % 1000));
}

static CT_NOINST char *put_marks(char *o, uint8_t flags) {
    if (flags == 1)
        LIT(" [incomplete]");
    else if (flags == 2)
        LIT(" [unwound]");
    else if (flags == 3)
        LIT(" [incomplete, unwound]");
    return o;
}

static CT_NOINST char *put_chrome_flags(char *o, uint8_t flags) {
    if (flags == 1)
        LIT(",\"args\":{\"incomplete\": true}");
    else if (flags == 2)
        LIT(",\"args\":{\"unwound\": true}");
    else if (flags == 3)
        LIT(",\"args\":{\"incomplete\": true, \"unwound\": true}");
    return o;
}

/* Format rows from..n into out (cap bytes; *used grows). Returns the next
 * row to give; *held is 1 when that row passed the selection but carries
 * captured values, for Python to format at depth *shown (then resume at
 * the row after it). Stops early when out is nearly full. */
CT_EXPORT CT_NOINST size_t ct_fmt_rows(struct ct_fmt *r, const int32_t *func, const int32_t *depth,
                                       const int64_t *start, const int64_t *dur, const uint8_t *flags,
                                       const uint8_t *held_rows, size_t from, size_t n, char *out,
                                       size_t cap, size_t *used, int32_t *held, int64_t *shown_out) {
    char *o = out + *used;
    *held = 0;
    size_t i = from;
    for (; i < n; i++) {
        int32_t f = func[i];
        if ((size_t)(o - out) + r->namelen[f] + 2 * (size_t)depth[i] + 256 > cap)
            break;
        int64_t shown;
        if (!fmt_pass(r, f, depth[i], dur[i], &shown))
            continue;
        r->shown++;
        if (held_rows && held_rows[i]) {
            *held = 1;
            *shown_out = shown;
            break;
        }
        if (r->mode == FMT_CHROME) {
            PUT(r->names[f], r->namelen[f]);
            o = put_us(o, start[i]);
            LIT(",\"dur\":");
            o = put_us(o, dur[i]);
            o = put_chrome_flags(o, flags[i]);
            *o++ = '}';
            continue;
        }
        o = put_ns(o, start[i]);
        LIT("  ");
        const char *c = !r->colour ? NULL : dur[i] >= 1000000 ? "\x1b[31m" : dur[i] >= 10000 ? "\x1b[33m" : NULL;
        if (c)
            PUT(c, 5);
        o = put_ns(o, dur[i]);
        if (c)
            LIT("\x1b[0m");
        LIT("  ");
        for (int64_t k = 0; k < shown; k++)
            LIT("  ");
        if (r->colour && shown == 0)
            LIT("\x1b[36m");
        PUT(r->names[f], r->namelen[f]);
        o = put_marks(o, flags[i]);
        if (r->colour && shown == 0)
            LIT("\x1b[0m");
        *o++ = '\n';
    }
    *used = (size_t)(o - out);
    return i;
}
