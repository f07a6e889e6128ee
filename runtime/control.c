/* Start-up controls: the toggle signal, the threshold, record-time filters
 * and the argument-capture plan. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ct.h"

/* The toggle signal flips recording; threads notice at their next call. */
CT_NOINST void ct_on_toggle(int sig) {
    (void)sig;
    __atomic_store_n(&ct_recording, !__atomic_load_n(&ct_recording, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
    __atomic_add_fetch(&ct_epoch, 1, __ATOMIC_RELEASE);
}

/* Threshold, toggle signal, --function/--exclude filters. */
static CT_NOINST void option(const char *name, const char *value) {
    char line[512];
    int n = snprintf(line, sizeof line, "%s=%s", name, value);
    if (n > 0 && n < (int)sizeof line)
        ct_meta(CT_META_OPTION, line, (size_t)n);
}

CT_NOINST void ct_controls(void) {
    struct ct_header *h = ct_header();
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)ct_cfg.threshold_ns);
    option("threshold_ns", num);
    snprintf(num, sizeof num, "%d", ct_cfg.toggle_signal);
    option("toggle_signal", num);
    static const char *const sel[][2] = {
        {"function", "CALLTRACE_FUNCTION"}, {"only", "CALLTRACE_ONLY"}, {"exclude", "CALLTRACE_EXCLUDE"}};
    for (size_t i = 0; i < sizeof sel / sizeof *sel; i++) {
        const char *v = ct_env(sel[i][1]);
        if (v && *v)
            option(sel[i][0], v);
    }
    if (ct_cfg.threshold_ns && h) {
        ct_threshold_ticks = (uint64_t)((double)ct_cfg.threshold_ns / h->ns_per_tick) + 1;
        ct_exit_slow = 1;
    }
    int sig = ct_cfg.toggle_signal;
    if (sig) {
        struct sigaction old;
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_DFL && !(old.sa_flags & SA_SIGINFO)) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = ct_on_toggle;
            sa.sa_flags = SA_RESTART;
            sigemptyset(&sa.sa_mask);
            sigaction(sig, &sa, NULL);
            ct_log("signal %d toggles recording", sig);
        } else {
            ct_log("signal %d already has a handler: it does not toggle recording", sig);
        }
    }
    ct_filter_setup();
}

/* CALLTRACE_CAPTURE_ARGS=1: load the plan `calltrace run` made, or make one. */
CT_NOINST void ct_load_plan(void) {
    const char *plan = ct_env("CALLTRACE_PLAN");
    if (plan && *plan && ct_capture_load(plan) <= 0)
        return;
    /* No plan, or one for another program (this image was exec'd). */
    char exe[PATH_MAX], path[PATH_MAX + 32];
    if (ct_exe_path(exe, sizeof exe) < 0)
        return;
    snprintf(path, sizeof path, "%s.plan", ct_raw_path());
    if (ct_run_python("plan", exe, "-o", path, NULL) == 0)
        ct_capture_load(path);
    else
        ct_warn("could not make a capture plan for %s; arguments not captured", exe);
    unlink(path);
}

