/*
 * icee-runner: the one piece of icee inside a sandbox.
 *
 * It reads a request (source files, compile and run commands, limits, an
 * optional terminal) as frames on stdin, runs the compile stage and then the
 * run stage, relays the program's stdin, stdout and stderr, and reports stage
 * events, `waiting` and the result as frames on stdout. The wire protocol is
 * docs/runner.md; runner/README.md says what it costs and how `waiting` is
 * inferred.
 *
 * Shape (after tini and catatonit): one file, one task, no threads, signals
 * through a signalfd, every syscall's result checked, EINTR retried, all
 * buffers static and bounded (no allocation at all).
 *
 * Exit status: the run stage's exit code, or 128 + the signal that killed it;
 * the compiler's code (128 + signal) when the compile stage fails; 125 for a
 * protocol error or a failed setup (the runner's own failure).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define EXIT_RUNNER 125
#define MAX_PAYLOAD 1048576u
#define MAX_HEADER 32
#define MAX_CMD 65536
#define MAX_SMALL 64
#define MAX_NAME 255
#define IO_CHUNK 65536
#define INQ_SIZE (256 * 1024) /* input held for the program; beyond it, backpressure */
#define SAMPLE_MS 40          /* waiting detection: /proc sample interval */
/* Once `w` is sent the interval doubles per quiet sample up to this: a waiting
   program costs the sandbox ~2 samples a second instead of 25 (each one a walk of
   /proc through gVisor's sentry). Input or output still sends `r` at once. */
#define WAITING_SAMPLE_MAX_MS 640
#define QUIET_SAMPLES 2       /* consecutive quiet samples before `w` */
#define DRAIN_MAX_MS 100      /* after a stage's main process exits */
#define DRAIN_QUIET_MS 20     /* ... or this long with nothing to read */

extern char **environ;

static const char *workspace = "/workspace";

/* ---------- small helpers ---------- */

static void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void diag(const char *fmt, ...) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "icee-runner: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    size_t len = (size_t)n + ((size_t)m < sizeof buf - (size_t)n - 1 ? (size_t)m : sizeof buf - (size_t)n - 2);
    buf[len++] = '\n';
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(2, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        off += (size_t)w;
    }
}

static int64_t now_ms(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return -1;
    return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void close_fd(int *fd) {
    if (*fd >= 0) {
        /* close() must not be retried on EINTR on Linux: the fd is gone either way. */
        (void)close(*fd);
        *fd = -1;
    }
}

/* Parse a decimal in [lo, hi] that fills [s, s+n) exactly. */
static int parse_uint(const char *s, size_t n, long lo, long hi, long *out) {
    if (n == 0 || n > 10) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* ---------- state ---------- */

enum stage_kind { STAGE_NONE, STAGE_COMPILE, STAGE_RUN };

static struct {
    int sigfd;
    int tty;                   /* T frame seen */
    long cols, rows;
    long pids;                 /* 0: no RLIMIT_NPROC */
    long output_cap;           /* o/e payload bytes relayed at most (0: no cap) */
    long relayed;              /* o/e payload bytes relayed so far */
    int master, replica;       /* tty mode */
    char replica_path[32];
    char compile_cmd[MAX_CMD + 1];
    size_t compile_len;
    int have_compile;
    char run_cmd[MAX_CMD + 1];
    size_t run_len;
    int have_run;
    int go;                    /* G seen */
    int in_eof;                /* our stdin ended */
    int eof_pending;           /* E seen: end the program's input after the queue */
    int stopped;               /* a signal from outside (the container's stop) was forwarded */

    /* the current stage */
    enum stage_kind stage;
    pid_t pid;                 /* its main process (also its session and process group) */
    int64_t started_ms;
    int exited;                /* main process reaped */
    int status;
    struct rusage ru;
    int64_t exited_ms;
    int64_t last_read_ms;      /* during the drain */
    int in_w;                  /* pipe mode: program stdin's write end (FIONREAD works on it too) */
    int out_r, err_r;          /* pipe mode: program stdout/stderr */

    /* waiting detection */
    int waiting;
    int quiet;
    int activity;              /* output or input since the last sample */
    long long last_cpu;
    int have_cpu;
    int64_t next_sample_ms;
    int64_t sample_ms;         /* the current interval: SAMPLE_MS, longer while waiting */
} st; /* zero: in .bss, not in the binary; fds set to -1 in main() */

/* ---------- frames out ---------- */

static void die_runner(const char *why) __attribute__((noreturn));

static void write_all_v(struct iovec *iov, int cnt) {
    while (cnt > 0) {
        ssize_t w = writev(1, iov, cnt);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { /* stdout is ours to keep blocking; wait if someone made it non-blocking */
                struct pollfd p = {.fd = 1, .events = POLLOUT};
                (void)poll(&p, 1, -1);
                continue;
            }
            die_runner("writing to stdout failed");
        }
        size_t left = (size_t)w;
        while (cnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
}

static void emit(char type, const void *payload, size_t len) {
    char hdr[MAX_HEADER];
    int n = snprintf(hdr, sizeof hdr, "%c %zu\n", type, len);
    struct iovec iov[3] = {
        {.iov_base = hdr, .iov_len = (size_t)n},
        {.iov_base = (void *)payload, .iov_len = len},
        {.iov_base = "\n", .iov_len = 1},
    };
    write_all_v(iov, 3);
}

static void emitf(char type, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emitf(char type, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
    emit(type, buf, (size_t)n);
}

static void kill_stage(int sig) {
    if (st.pid <= 0) return;
    if (kill(-st.pid, sig) != 0 && errno == ESRCH && !st.exited)
        (void)kill(st.pid, sig); /* the child may not have called setsid() yet */
}

static void die_runner(const char *why) {
    diag("%s: %s", why, strerror(errno));
    kill_stage(SIGKILL);
    _exit(EXIT_RUNNER);
}

static void protocol_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void protocol_error(const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    diag("protocol error: %s", buf);
    kill_stage(SIGKILL);
    _exit(EXIT_RUNNER);
}

static void setup_failed(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void setup_failed(const char *fmt, ...) {
    char buf[384];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    diag("setup failed: %s", buf);
    kill_stage(SIGKILL);
    emitf('q', "result=setup-failed");
    _exit(EXIT_RUNNER);
}

/* ---------- input queue (program stdin) ---------- */

static unsigned char inq[INQ_SIZE];
static size_t inq_head, inq_len;

static size_t inq_space(void) { return INQ_SIZE - inq_len; }

static void inq_put(const unsigned char *p, size_t n) {
    while (n > 0) {
        size_t tail = (inq_head + inq_len) % INQ_SIZE;
        size_t run = INQ_SIZE - tail;
        if (run > n) run = n;
        memcpy(inq + tail, p, run);
        inq_len += run;
        p += run;
        n -= run;
    }
}

static void set_running(void);

/* The program's stdin: the pipe's write end, or the pty master. */
static int input_fd(void) { return st.tty ? st.master : st.in_w; }

static void finish_input_if_due(void);

/* Write queued input to the program (run stage only). */
static void flush_input(void) {
    int fd = input_fd();
    if (st.stage != STAGE_RUN || st.exited || fd < 0) return;
    while (inq_len > 0) {
        size_t run = INQ_SIZE - inq_head;
        if (run > inq_len) run = inq_len;
        ssize_t w = write(fd, inq + inq_head, run);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            if (errno == EPIPE || errno == EIO) { /* the program closed its stdin: drop the input */
                inq_len = 0;
                break;
            }
            die_runner("writing the program's input failed");
        }
        inq_head = (inq_head + (size_t)w) % INQ_SIZE;
        inq_len -= (size_t)w;
        st.activity = 1;
        if (st.waiting) set_running();
    }
    inq_head = 0;
    finish_input_if_due();
}

/* After E (or the end of our stdin) and once the queue is empty: end the program's input. */
static void finish_input_if_due(void) {
    if (st.eof_pending != 1 || st.stage != STAGE_RUN || st.exited || inq_len > 0) return;
    st.eof_pending = 2;
    if (st.tty) {
        /* Like a typed ^D: the terminal's EOF character. */
        struct termios t;
        unsigned char veof = 4;
        if (st.replica >= 0 && tcgetattr(st.replica, &t) == 0) veof = t.c_cc[VEOF];
        inq_put(&veof, 1);
        flush_input();
    } else {
        close_fd(&st.in_w);
        if (st.waiting) set_running();
    }
}

/* ---------- request files ---------- */

static int file_fd = -1;
static char file_name[MAX_NAME + 2];
static size_t file_name_len;
static int file_named; /* the name's NUL seen and the file open */

/* Names are relative, at most 255 bytes, with no empty, "." or ".." parts. */
static int name_ok(const char *s, size_t n) {
    if (n == 0 || n > MAX_NAME || s[0] == '/') return 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '/') {
            size_t len = i - start;
            if (len == 0) return 0;
            if (len == 1 && s[start] == '.') return 0;
            if (len == 2 && s[start] == '.' && s[start + 1] == '.') return 0;
            start = i + 1;
        } else if (s[i] == '\0') {
            return 0;
        }
    }
    return 1;
}

/* Open (creating parents) a new file under the workspace, following no links. */
static int open_new_file(char *name) {
    int dir = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return -1;
    char *part = name;
    for (;;) {
        char *slash = strchr(part, '/');
        if (!slash) break;
        *slash = '\0';
        if (mkdirat(dir, part, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            (void)close(dir);
            *slash = '/';
            errno = e;
            return -1;
        }
        int next = openat(dir, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        (void)close(dir);
        *slash = '/';
        if (next < 0) {
            errno = e;
            return -1;
        }
        dir = next;
        part = slash + 1;
    }
    int fd = openat(dir, part, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    int e = errno;
    (void)close(dir);
    errno = e;
    return fd;
}

static void file_data(const unsigned char *p, size_t n) {
    if (!file_named) {
        const unsigned char *nul = memchr(p, 0, n);
        size_t take = nul ? (size_t)(nul - p) : n;
        if (file_name_len + take > MAX_NAME) {
            file_name[MAX_NAME] = '\0';
            memcpy(file_name + file_name_len, p, MAX_NAME - file_name_len);
            file_name[MAX_NAME] = '\0';
            setup_failed("refused file name '%.64s...': longer than %d bytes", file_name, MAX_NAME);
        }
        memcpy(file_name + file_name_len, p, take);
        file_name_len += take;
        file_name[file_name_len] = '\0';
        if (!nul) return;
        if (!name_ok(file_name, file_name_len))
            setup_failed("refused file name '%s': not a relative path without '.', '..' or empty parts", file_name);
        file_fd = open_new_file(file_name);
        if (file_fd < 0) setup_failed("cannot create %s: %s", file_name, strerror(errno));
        file_named = 1;
        p += take + 1;
        n -= take + 1;
    }
    while (n > 0) {
        ssize_t w = write(file_fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            setup_failed("writing %s: %s", file_name, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
}

static void file_end(void) {
    if (!file_named) setup_failed("file frame without a NUL after its name");
    if (close(file_fd) != 0 && errno != EINTR) setup_failed("writing %s: %s", file_name, strerror(errno));
    file_fd = -1;
    file_named = 0;
    file_name_len = 0;
}

/* ---------- frames in ---------- */

static unsigned char inbuf[IO_CHUNK];
static size_t inbuf_len, inbuf_off;

enum { P_HEADER, P_PAYLOAD, P_TRAILER };
static int pstate = P_HEADER;
static char ptype;
static size_t plen, pgot;
static char small[MAX_SMALL + 1];

static int parse_size(const char *p, size_t n, long *cols, long *rows) {
    /* "cols=<c> rows=<r>" */
    const char *sp = memchr(p, ' ', n);
    if (!sp || n < 12 || memcmp(p, "cols=", 5) != 0) return -1;
    size_t a = (size_t)(sp - p);
    if (n - a - 1 < 6 || memcmp(sp + 1, "rows=", 5) != 0) return -1;
    if (parse_uint(p + 5, a - 5, 1, 65535, cols) != 0) return -1;
    return parse_uint(sp + 6, n - a - 6, 1, 65535, rows);
}

static void apply_winsize(void) {
    struct winsize ws = {.ws_row = (unsigned short)st.rows, .ws_col = (unsigned short)st.cols};
    if (ioctl(st.master, TIOCSWINSZ, &ws) != 0) die_runner("TIOCSWINSZ");
    /* Linux signals the terminal's foreground process group; gVisor's pty does not, so
       the runner does (on Linux the program gets two SIGWINCH for one resize: harmless,
       a handler reads the size either way). */
    if (st.stage == STAGE_RUN && !st.exited && st.pid > 0) {
        pid_t fg = tcgetpgrp(st.master);
        (void)kill(fg > 0 ? -fg : -st.pid, SIGWINCH);
    }
}

static int signal_by_name(const char *s, size_t n) {
    static const struct { const char *name; int sig; } tab[] = {
        {"SIGINT", SIGINT}, {"SIGTERM", SIGTERM}, {"SIGKILL", SIGKILL}, {"SIGQUIT", SIGQUIT}, {"SIGHUP", SIGHUP},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strlen(tab[i].name) == n && memcmp(tab[i].name, s, n) == 0) return tab[i].sig;
    return 0;
}

static size_t type_limit(char t) {
    switch (t) {
    case 'F': case 'I': return MAX_PAYLOAD;
    case 'C': case 'R': return MAX_CMD;
    case 'L': case 'T': case 'Z': case 'S': return MAX_SMALL;
    case 'G': case 'E': return 0;
    default: return (size_t)-1;
    }
}

static void frame_begin(void) {
    if (!st.go && !strchr("FCRLTG", ptype)) protocol_error("frame '%c' before the request's G", ptype);
    if (st.go && !strchr("IESZ", ptype)) protocol_error("frame '%c' after G", ptype);
    if ((ptype == 'C' && st.have_compile) || (ptype == 'R' && st.have_run) || (ptype == 'T' && st.tty) ||
        (ptype == 'L' && st.pids))
        protocol_error("frame '%c' given twice", ptype);
}

/* Consume up to n payload bytes; returns how many were taken (I may take fewer). */
static size_t frame_data(const unsigned char *p, size_t n) {
    switch (ptype) {
    case 'F':
        file_data(p, n);
        return n;
    case 'C':
        memcpy(st.compile_cmd + pgot, p, n);
        return n;
    case 'R':
        memcpy(st.run_cmd + pgot, p, n);
        return n;
    case 'I': {
        size_t take = n < inq_space() ? n : inq_space();
        if (st.eof_pending) take = n; /* input after E is dropped */
        else inq_put(p, take);
        return take;
    }
    default:
        memcpy(small + pgot, p, n);
        return n;
    }
}

static void frame_end(void) {
    switch (ptype) {
    case 'F':
        file_end();
        break;
    case 'C':
        if (plen == 0) protocol_error("empty compile command");
        st.compile_cmd[plen] = '\0';
        if (memchr(st.compile_cmd, 0, plen)) protocol_error("NUL in the compile command");
        st.compile_len = plen;
        st.have_compile = 1;
        break;
    case 'R':
        if (plen == 0) protocol_error("empty run command");
        st.run_cmd[plen] = '\0';
        if (memchr(st.run_cmd, 0, plen)) protocol_error("NUL in the run command");
        st.run_len = plen;
        st.have_run = 1;
        break;
    case 'L': {
        /* "pids=<n>" or "pids=<n> output=<bytes>" */
        const char *sp = memchr(small, ' ', plen);
        size_t a = sp ? (size_t)(sp - small) : plen;
        if (a < 6 || memcmp(small, "pids=", 5) != 0 || parse_uint(small + 5, a - 5, 2, 1000000, &st.pids) != 0 ||
            (sp && (plen - a - 1 < 8 || memcmp(sp + 1, "output=", 7) != 0 ||
                    parse_uint(sp + 8, plen - a - 8, 1, 2000000000, &st.output_cap) != 0)))
            protocol_error("bad L payload (want pids=<2..1000000> [output=<1..2000000000>])");
        break;
    }
    case 'T':
        if (parse_size(small, plen, &st.cols, &st.rows) != 0) protocol_error("bad T payload (want cols=<c> rows=<r>)");
        st.tty = 1;
        break;
    case 'Z':
        if (parse_size(small, plen, &st.cols, &st.rows) != 0) protocol_error("bad Z payload (want cols=<c> rows=<r>)");
        if (st.tty) apply_winsize();
        break;
    case 'S': {
        int sig = signal_by_name(small, plen);
        if (!sig) protocol_error("bad S payload (want SIGINT, SIGTERM, SIGKILL, SIGQUIT or SIGHUP)");
        if (st.stage != STAGE_NONE) kill_stage(sig);
        break;
    }
    case 'G':
        if (!st.have_run) protocol_error("G without an R (run command)");
        st.go = 1;
        break;
    case 'E':
        if (!st.eof_pending) st.eof_pending = 1;
        break;
    case 'I':
        break;
    }
}

/* Parse what is buffered. Stops when it needs more bytes or the input queue is full. */
static void parse_input(void) {
    int stopped = 0;
    while (!stopped && inbuf_off < inbuf_len) {
        unsigned char *p = inbuf + inbuf_off;
        size_t n = inbuf_len - inbuf_off;
        if (pstate == P_HEADER) {
            unsigned char *nl = memchr(p, '\n', n < MAX_HEADER ? n : MAX_HEADER);
            if (!nl) {
                if (n >= MAX_HEADER) protocol_error("header longer than %d bytes", MAX_HEADER);
                break;
            }
            size_t hl = (size_t)(nl - p);
            long len;
            if (hl < 3 || !isalpha(p[0]) || p[1] != ' ' || parse_uint((char *)p + 2, hl - 2, 0, MAX_PAYLOAD, &len) != 0)
                protocol_error("malformed header '%.*s'", (int)(hl < 32 ? hl : 32), (char *)p);
            ptype = (char)p[0];
            size_t lim = type_limit(ptype);
            if (lim == (size_t)-1) protocol_error("unknown frame type '%c'", ptype);
            if ((size_t)len > lim) protocol_error("frame '%c' of %ld bytes (at most %zu)", ptype, len, lim);
            plen = (size_t)len;
            pgot = 0;
            frame_begin();
            inbuf_off += hl + 1;
            pstate = plen ? P_PAYLOAD : P_TRAILER;
        } else if (pstate == P_PAYLOAD) {
            size_t want = plen - pgot;
            size_t take = frame_data(p, n < want ? n : want);
            pgot += take;
            inbuf_off += take;
            if (pgot == plen) pstate = P_TRAILER;
            else if (take == 0) stopped = 1; /* the input queue is full: backpressure */
        } else {
            if (p[0] != '\n') protocol_error("frame '%c' not followed by a newline", ptype);
            inbuf_off++;
            pstate = P_HEADER;
            frame_end();
            if (ptype == 'G') stopped = 1; /* main() sets up the stages before parsing on */
        }
    }
    if (st.in_eof && !stopped && (pstate != P_HEADER || inbuf_off < inbuf_len))
        protocol_error("input ended inside a frame");
    if (inbuf_off == inbuf_len) inbuf_off = inbuf_len = 0;
}

/* Read from stdin; returns 0 at end of input. */
static int read_input(void) {
    if (inbuf_off > 0) {
        memmove(inbuf, inbuf + inbuf_off, inbuf_len - inbuf_off);
        inbuf_len -= inbuf_off;
        inbuf_off = 0;
    }
    for (;;) {
        if (inbuf_len == sizeof inbuf) return 1; /* full: parse (after backpressure) first */
        ssize_t r = read(0, inbuf + inbuf_len, sizeof inbuf - inbuf_len);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 1;
            die_runner("reading stdin failed");
        }
        if (r == 0) {
            st.in_eof = 1;
            parse_input();
            return 0;
        }
        inbuf_len += (size_t)r;
        parse_input();
        return 1;
    }
}

/* ---------- waiting detection ---------- */

static char dents[8192], tdents[4096];

/* Read /proc/<path>/stat. Returns state, sets sid/ppid/cpu ticks/threads; 0 if gone. */
static char read_stat(const char *path, long *sid, long *ppid, long long *cpu, long *threads) {
    char buf[1024];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n;
    do n = read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    (void)close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    char *rp = strrchr(buf, ')'); /* the command name may hold anything */
    if (!rp || rp[1] != ' ') return 0;
    char state = rp[2];
    /* fields after the state: 4 ppid 5 pgrp 6 session ... 14 utime 15 stime ... 20 num_threads */
    char *s = rp + 3;
    long long f[21] = {0};
    for (int i = 4; i <= 20 && *s; i++) {
        while (*s == ' ') s++;
        f[i] = strtoll(s, &s, 10);
    }
    *ppid = (long)f[4];
    *sid = (long)f[6];
    *cpu = f[14] + f[15];
    *threads = (long)f[20];
    return state;
}

static int is_sleeping(char s) { return s == 'S' || s == 'Z' || s == 'X' || s == 'I'; }

/* Every task of the session asleep? Sum their CPU ticks. Returns -1 if some task runs. */
static int sample_tasks(long long *cpu_total) {
    pid_t self = getpid();
    int dfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return -1;
    int all_asleep = 1;
    long long total = 0;
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, dents, sizeof dents);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (long off = 0; off < n;) {
            struct { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[]; } *d =
                (void *)(dents + off);
            off += d->reclen;
            if (d->name[0] < '1' || d->name[0] > '9') continue;
            long pid = strtol(d->name, NULL, 10);
            if (pid == self) continue;
            char path[64];
            long sid, ppid, threads;
            long long cpu;
            (void)snprintf(path, sizeof path, "/proc/%ld/stat", pid);
            char s = read_stat(path, &sid, &ppid, &cpu, &threads);
            if (!s || (sid != st.pid && ppid != self)) continue;
            total += cpu;
            if (!is_sleeping(s)) all_asleep = 0;
            if (threads > 1 && all_asleep) {
                /* the state in /proc/PID/stat is the main thread's: look at every thread */
                (void)snprintf(path, sizeof path, "/proc/%ld/task", pid);
                int tfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (tfd < 0) continue;
                for (;;) {
                    long tn = syscall(SYS_getdents64, tfd, tdents, sizeof tdents);
                    if (tn < 0 && errno == EINTR) continue;
                    if (tn <= 0) break;
                    for (long toff = 0; toff < tn && all_asleep;) {
                        struct { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[]; } *t =
                            (void *)(tdents + toff);
                        toff += t->reclen;
                        if (t->name[0] < '1' || t->name[0] > '9') continue;
                        char tpath[96];
                        long a, b, c;
                        long long x;
                        (void)snprintf(tpath, sizeof tpath, "/proc/%ld/task/%s/stat", pid, t->name);
                        char ts = read_stat(tpath, &a, &b, &x, &c);
                        if (ts && !is_sleeping(ts)) all_asleep = 0;
                    }
                }
                (void)close(tfd);
            }
        }
    }
    (void)close(dfd);
    *cpu_total = total;
    return all_asleep ? 0 : -1;
}

static void set_running(void) {
    st.waiting = 0;
    st.quiet = 0;
    st.sample_ms = SAMPLE_MS;
    st.next_sample_ms = now_ms() + SAMPLE_MS; /* a new prompt is seen as soon as before */
    emit('r', "", 0);
}

static int sampling(void) {
    return st.stage == STAGE_RUN && !st.exited && !(st.eof_pending == 2 && !st.tty);
}

static void sample(int late) {
    int quiet = !st.activity && inq_len == 0;
    st.activity = 0;
    if (quiet) {
        int unread = 0;
        int fd = st.tty ? st.replica : st.in_w;
        if (fd >= 0 && ioctl(fd, FIONREAD, &unread) == 0 && unread > 0) quiet = 0;
    }
    long long cpu = 0;
    int asleep = sample_tasks(&cpu) == 0;
    if (!asleep || !st.have_cpu || cpu != st.last_cpu) quiet = 0;
    st.last_cpu = cpu;
    st.have_cpu = 1;
    if (quiet && late) {
        /* The runner itself was held up: the machine is starved and a program that
           should have run may not have. Inconclusive: neither quiet nor running. */
    } else if (quiet) {
        if (st.quiet < QUIET_SAMPLES) st.quiet++;
        if (st.waiting && st.sample_ms < WAITING_SAMPLE_MAX_MS) st.sample_ms *= 2;
        if (st.quiet == QUIET_SAMPLES && !st.waiting) {
            st.waiting = 1;
            emit('w', "", 0);
        }
    } else {
        st.quiet = 0;
        st.sample_ms = SAMPLE_MS;
        if (st.waiting) set_running();
    }
}

/* ---------- stages ---------- */

static sigset_t orig_mask;

static void child_exec(const char *cmd, int in, int out, int err, int ctty) __attribute__((noreturn));
static void child_exec(const char *cmd, int in, int out, int err, int ctty) {
    if (sigprocmask(SIG_SETMASK, &orig_mask, NULL) != 0) _exit(126);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP) (void)signal(s, SIG_DFL);
    if (setsid() < 0) _exit(126);
    /* Move the fds clear of 0..2 first, so dup2 cannot clobber one another. */
    int fds[3] = {in, out, err};
    for (int i = 0; i < 3; i++) {
        int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
        if (d < 0) _exit(126);
        fds[i] = d;
    }
    for (int i = 0; i < 3; i++)
        if (dup2(fds[i], i) != i) _exit(126);
    if (ctty && ioctl(0, TIOCSCTTY, 0) != 0) _exit(126);
    if (syscall(SYS_close_range, 3, ~0U, 0) != 0) {
        struct rlimit rl;
        long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? (long)rl.rlim_cur : 65536;
        for (long fd = 3; fd < max; fd++) (void)close((int)fd);
    }
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    execve("/bin/sh", argv, environ);
    static const char msg[] = "icee-runner: cannot execute /bin/sh\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(127);
}

static void make_pipe(int p[2]) {
    if (pipe2(p, O_CLOEXEC) != 0) setup_failed("pipe: %s", strerror(errno));
}

static void start_stage(enum stage_kind kind) {
    int child_in = -1, child_out = -1, child_err = -1, devnull = -1;
    if (kind == STAGE_COMPILE) {
        devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull < 0) setup_failed("/dev/null: %s", strerror(errno));
        child_in = devnull;
    }
    int p_in[2] = {-1, -1}, p_out[2] = {-1, -1}, p_err[2] = {-1, -1};
    if (st.tty) {
        if (kind == STAGE_RUN) child_in = st.replica;
        child_out = child_err = st.replica;
    } else {
        if (kind == STAGE_RUN) {
            make_pipe(p_in);
            child_in = p_in[0];
        }
        make_pipe(p_out);
        make_pipe(p_err);
        child_out = p_out[1];
        child_err = p_err[1];
    }
    st.stage = kind;
    st.exited = 0;
    st.started_ms = now_ms();
    emitf('b', "stage=%s", kind == STAGE_RUN ? "run" : "compile");
    pid_t pid = fork();
    if (pid < 0) setup_failed("fork: %s", strerror(errno));
    if (pid == 0)
        child_exec(kind == STAGE_RUN ? st.run_cmd : st.compile_cmd, child_in, child_out, child_err,
                   st.tty && kind == STAGE_RUN);
    st.pid = pid;
    close_fd(&devnull);
    if (!st.tty) {
        close_fd(&p_out[1]);
        close_fd(&p_err[1]);
        st.out_r = p_out[0];
        st.err_r = p_err[0];
        if (set_nonblock(st.out_r) != 0 || set_nonblock(st.err_r) != 0) die_runner("fcntl");
        if (kind == STAGE_RUN) {
            close_fd(&p_in[0]); /* if the program closes its stdin, our writes fail: input dropped */
            st.in_w = p_in[1];
            if (set_nonblock(st.in_w) != 0) die_runner("fcntl");
        }
    }
    if (kind == STAGE_RUN) {
        st.waiting = st.quiet = st.activity = st.have_cpu = 0;
        st.sample_ms = SAMPLE_MS;
        st.next_sample_ms = now_ms() + SAMPLE_MS;
        flush_input();
        finish_input_if_due();
    }
}

static void reap(void) {
    for (;;) {
        int status;
        struct rusage ru;
        pid_t p = wait4(-1, &status, WNOHANG, &ru);
        if (p < 0) {
            if (errno == EINTR) continue;
            if (errno == ECHILD) return;
            die_runner("wait4");
        }
        if (p == 0) return;
        if (p == st.pid && !st.exited) {
            st.exited = 1;
            st.status = status;
            st.ru = ru;
            st.exited_ms = st.last_read_ms = now_ms();
            if (st.tty) close_fd(&st.replica); /* so the master reads EIO once drained */
            if (!st.tty) {
                close_fd(&st.in_w);
            }
            if (st.waiting) set_running();
        }
    }
}

/* Read one chunk of program output from fd; returns 0 at end of file. */
static unsigned char obuf[IO_CHUNK];

static int relay_output(int *fd, char type) {
    for (;;) {
        ssize_t r = read(*fd, obuf, sizeof obuf);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 1;
            if (errno == EIO) r = 0; /* pty: every replica closed */
            else die_runner("reading program output");
        }
        if (r == 0) {
            if (*fd == st.master) return 0; /* kept for the next stage */
            close_fd(fd);
            return 0;
        }
        if (st.waiting) set_running();
        st.activity = 1;
        st.last_read_ms = now_ms();
        /* Past the cap the api has ended the session: drain and drop, so the program
           does not block and the node's container log stays near the limit. */
        size_t n = (size_t)r;
        if (st.output_cap) {
            long room = st.output_cap - st.relayed;
            if (room <= 0) return 1;
            if ((long)n > room) n = (size_t)room;
            st.relayed += (long)n;
        }
        emit(type, obuf, n);
        return 1;
    }
}

static void handle_signals(void) {
    struct signalfd_siginfo si[8];
    for (;;) {
        ssize_t r = read(st.sigfd, si, sizeof si);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            die_runner("signalfd");
        }
        for (size_t i = 0; i < (size_t)r / sizeof si[0]; i++) {
            int sig = (int)si[i].ssi_signo;
            if (sig != SIGCHLD && st.stage != STAGE_NONE && !st.exited) {
                st.stopped = 1; /* whoever stops the container names the outcome, not us */
                kill_stage(sig); /* forward, like tini */
            }
        }
        if ((size_t)r < sizeof si) break;
    }
    reap();
}

/* Run the current stage until its main process has exited and its output is drained. */
static void run_stage(void) {
    int master_eof = 0;
    for (;;) {
        if (inbuf_len > inbuf_off) parse_input(); /* frames that came with the request, or after backpressure */
        if (inq_len > 0) flush_input();
        finish_input_if_due();
        int64_t now = now_ms();
        if (st.exited) {
            int open_out = st.tty ? !master_eof : (st.out_r >= 0 || st.err_r >= 0);
            if (!open_out || now - st.exited_ms >= DRAIN_MAX_MS || now - st.last_read_ms >= DRAIN_QUIET_MS) break;
        }
        struct pollfd p[5];
        int np = 0, i_sig, i_in = -1, i_prog = -1, i_out = -1, i_err = -1;
        p[np] = (struct pollfd){.fd = st.sigfd, .events = POLLIN};
        i_sig = np++;
        if (!st.exited && !st.in_eof && inbuf_len - inbuf_off < sizeof inbuf) {
            p[np] = (struct pollfd){.fd = 0, .events = POLLIN};
            i_in = np++;
        }
        if (st.tty) {
            short ev = master_eof ? 0 : POLLIN;
            if (st.stage == STAGE_RUN && !st.exited && inq_len > 0) ev |= POLLOUT;
            if (ev) {
                p[np] = (struct pollfd){.fd = st.master, .events = ev};
                i_prog = np++;
            }
        } else {
            if (st.stage == STAGE_RUN && !st.exited && inq_len > 0 && st.in_w >= 0) {
                p[np] = (struct pollfd){.fd = st.in_w, .events = POLLOUT};
                i_prog = np++;
            }
            if (st.out_r >= 0) {
                p[np] = (struct pollfd){.fd = st.out_r, .events = POLLIN};
                i_out = np++;
            }
            if (st.err_r >= 0) {
                p[np] = (struct pollfd){.fd = st.err_r, .events = POLLIN};
                i_err = np++;
            }
        }
        int timeout = -1;
        if (st.exited) {
            int64_t a = st.exited_ms + DRAIN_MAX_MS - now, b = st.last_read_ms + DRAIN_QUIET_MS - now;
            timeout = (int)(a < b ? a : b);
            if (timeout < 0) timeout = 0;
        } else if (sampling()) {
            int64_t t = st.next_sample_ms - now;
            timeout = t < 0 ? 0 : (int)t;
        }
        int n = poll(p, (nfds_t)np, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die_runner("poll");
        }
        if (p[i_sig].revents) handle_signals();
        if (i_in >= 0 && p[i_in].revents) {
            /* Our stdin ended without E: the attach stream that carried it broke (its
             * api, kubelet or runtime went away), not the user's end of input. The
             * program's input stays open; whoever ends the session says why. */
            if (!read_input() && !st.eof_pending) diag("stdin ended without E; the program's input stays open");
        }
        if (i_prog >= 0 && (p[i_prog].revents & (POLLIN | POLLHUP | POLLERR)) && st.tty)
            if (!relay_output(&st.master, 'o')) master_eof = 1;
        if (i_out >= 0 && p[i_out].revents) relay_output(&st.out_r, 'o');
        if (i_err >= 0 && p[i_err].revents) relay_output(&st.err_r, 'e');
        if (i_prog >= 0 && (p[i_prog].revents & (POLLOUT | POLLERR | POLLHUP))) flush_input();
        if (inbuf_len > inbuf_off) parse_input(); /* resume after backpressure */
        if (inq_len > 0) flush_input();
        finish_input_if_due();
        int64_t t = now_ms();
        if (sampling() && t >= st.next_sample_ms) {
            sample(t - st.next_sample_ms > SAMPLE_MS);
            st.next_sample_ms = now_ms() + st.sample_ms;
        }
    }
}

/* Emit the stage's x frame; returns its exit status in the runner's terms. */
static int end_stage(void) {
    /* Whatever the stage left running goes with it. */
    kill_stage(SIGKILL);
    close_fd(&st.out_r);
    close_fd(&st.err_r);
    int code = -1, sig = 0;
    if (WIFEXITED(st.status)) code = WEXITSTATUS(st.status);
    else if (WIFSIGNALED(st.status)) sig = WTERMSIG(st.status);
    long long cpu = (long long)st.ru.ru_utime.tv_sec * 1000 + st.ru.ru_utime.tv_usec / 1000 +
                    (long long)st.ru.ru_stime.tv_sec * 1000 + st.ru.ru_stime.tv_usec / 1000;
    emitf('x', "stage=%s exit=%d signal=%d cpu_ms=%lld mem_bytes=%lld wall_ms=%lld",
          st.stage == STAGE_RUN ? "run" : "compile", code, sig, cpu, (long long)st.ru.ru_maxrss * 1024,
          (long long)(st.exited_ms - st.started_ms));
    if (st.stage == STAGE_COMPILE) {
        /* Reap what was killed (briefly): zombies count against RLIMIT_NPROC for the run stage. */
        for (int i = 0; i < 50;) {
            pid_t p = waitpid(-st.pid, NULL, WNOHANG);
            if (p > 0) continue;
            if (p < 0 && errno == EINTR) continue;
            if (p < 0) break; /* ECHILD: none left */
            struct timespec ms = {0, 1000000};
            (void)nanosleep(&ms, NULL);
            i++;
        }
    }
    st.pid = 0;
    return sig ? 128 + sig : code;
}

static void open_pty(void) {
    st.master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (st.master < 0) setup_failed("posix_openpt: %s", strerror(errno));
    unsigned int n;
    if (unlockpt(st.master) != 0 || ioctl(st.master, TIOCGPTN, &n) != 0) setup_failed("pty: %s", strerror(errno));
    (void)snprintf(st.replica_path, sizeof st.replica_path, "/dev/pts/%u", n);
    st.replica = open(st.replica_path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (st.replica < 0) setup_failed("%s: %s", st.replica_path, strerror(errno));
    if (set_nonblock(st.master) != 0) setup_failed("fcntl: %s", strerror(errno));
    apply_winsize();
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--workspace") == 0 && i + 1 < argc) workspace = argv[++i];
        else {
            diag("usage: icee-runner [--workspace DIR]  (speaks docs/runner.md on stdin/stdout)");
            return 2;
        }
    }
    st.sigfd = st.master = st.replica = st.in_w = st.out_r = st.err_r = -1;
    /* The program runs under our uid: it must not ptrace us or open our fds via /proc. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) die_runner("PR_SET_DUMPABLE");
    /* Orphans of the program come to us (as PID 1 in a pod they would anyway). */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) die_runner("PR_SET_CHILD_SUBREAPER");
    struct rlimit core = {0, 0};
    if (setrlimit(RLIMIT_CORE, &core) != 0) die_runner("RLIMIT_CORE");
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) die_runner("SIGPIPE");
    sigset_t mask;
    sigemptyset(&mask);
    int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&mask, sigs[i]);
    if (sigprocmask(SIG_BLOCK, &mask, &orig_mask) != 0) die_runner("sigprocmask");
    st.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (st.sigfd < 0) die_runner("signalfd");
    if (chdir(workspace) != 0) setup_failed("workspace %s: %s", workspace, strerror(errno));

    /* The request, up to G. */
    while (!st.go) {
        struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = st.sigfd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            die_runner("poll");
        }
        if (p[1].revents) {
            struct signalfd_siginfo si;
            ssize_t r = read(st.sigfd, &si, sizeof si);
            if (r == (ssize_t)sizeof si && si.ssi_signo != SIGCHLD) {
                diag("signal %u before the request was complete", si.ssi_signo);
                return 128 + (int)si.ssi_signo;
            }
        }
        if (p[0].revents && !read_input() && !st.go) protocol_error("input ended before the request's G");
    }
    if (st.pids) {
        struct rlimit rl = {(rlim_t)st.pids, (rlim_t)st.pids};
        if (setrlimit(RLIMIT_NPROC, &rl) != 0) setup_failed("RLIMIT_NPROC: %s", strerror(errno));
    }
    if (st.tty) open_pty();

    if (st.have_compile) {
        start_stage(STAGE_COMPILE);
        run_stage();
        if (st.tty) {
            /* Reattach a replica for the run stage (the compile stage's is closed by then). */
            if (st.replica < 0) {
                st.replica = open(st.replica_path, O_RDWR | O_NOCTTY | O_CLOEXEC);
                if (st.replica < 0) setup_failed("%s: %s", st.replica_path, strerror(errno));
            }
        }
        int code = end_stage();
        if (code != 0) {
            emitf('q', st.stopped ? "result=stopped" : "result=compile-error");
            return code < 0 ? EXIT_RUNNER : code;
        }
    }
    start_stage(STAGE_RUN);
    run_stage();
    int code = end_stage();
    const char *result = st.stopped ? "stopped"
                         : code == 0 ? "completed"
                         : WIFSIGNALED(st.status) ? "signaled" : "error";
    emitf('q', "result=%s", result);
    return code < 0 ? EXIT_RUNNER : code;
}
