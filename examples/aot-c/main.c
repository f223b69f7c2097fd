/* Runs a kiln AOT artifact: reads each input from .npy (f32/i32/i64/u8/bool, little-endian,
 * C order) or raw bytes, runs the model on a pthreads pool, prints each output and writes
 * it as OUT_DIR/NAME.npy; with --bench N, times N runs and prints the median.
 *
 * Exit status: 0, 1 on an error, 2 on bad usage, 3 when an --expect comparison fails.
 *
 * Build (see the Makefile): cc -O2 -DKILN_MODEL=NAME -DKILN_HEADER='"NAME.h"' main.c NAME.o -lm -lpthread
 */
#define _GNU_SOURCE /* memmem, clock_gettime, posix_memalign under -std=c11 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include KILN_HEADER

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define M(x) CAT(KILN_MODEL, x)

typedef M(_kernel) kernel_fn;
typedef M(_runner) runner_t;
typedef M(_model) model_t;

/* ---- A pool of threads that runs one kernel's units at a time ------------------------ */

/* A call is cut into a few chunks per thread, which the caller and the workers claim one
 * at a time from a shared word: a thread that starts late or runs slow (a busy machine)
 * leaves its share to the others, and the caller never waits for a worker that has not
 * claimed anything. Idle workers spin briefly before they sleep, since a model posts one
 * kernel right after another; the caller takes the mutex only when one is asleep. */

#define CHUNKS_PER_THREAD 4
#define SPIN_NS 50000 /* how long an idle thread polls before it sleeps or yields */

/* The posted job in one word, so that a claim is one compare-and-swap that also checks the
 * job is still the current one: generation << 32 | chunks claimed << 16 | chunks. */
#define JOB_GEN(j) ((uint32_t)((j) >> 32))
#define JOB_TAKEN(j) ((uint32_t)((j) >> 16) & 0xffffu)
#define JOB_CHUNKS(j) ((uint32_t)(j) & 0xffffu)

typedef struct pool {
    int threads; /* including the caller */
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    _Atomic uint64_t job;
    atomic_uint done;    /* chunks of the current job finished */
    atomic_int sleepers; /* workers waiting on `wake` */
    atomic_int quit;
    uint32_t generation; /* the caller's count of jobs posted */
    /* Written before the job word is published; read only by a thread that claimed a chunk
     * of that job, which cannot end (nor be replaced) before the chunk is done. */
    kernel_fn kernel;
    void *const *args;
    uint64_t units;
} pool_t;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Claims and runs chunks of job `j` until none is left or another job replaced it. */
static void take_chunks(pool_t *p, uint64_t j) {
    uint32_t gen = JOB_GEN(j);
    while (JOB_GEN(j) == gen && JOB_TAKEN(j) < JOB_CHUNKS(j)) {
        if (!atomic_compare_exchange_weak(&p->job, &j, j + (1u << 16))) continue; /* j reloaded */
        uint64_t c = JOB_TAKEN(j), n = JOB_CHUNKS(j);
        uint64_t s = p->units * c / n, e = p->units * (c + 1) / n;
        if (s < e) p->kernel(p->args, s, e);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
        j = atomic_load(&p->job);
    }
}

static void *worker(void *arg) {
    pool_t *p = (pool_t *)arg;
    uint32_t seen = 0;
    for (;;) {
        uint64_t j = atomic_load(&p->job);
        if (JOB_GEN(j) == seen && !atomic_load(&p->quit)) {
            uint64_t t0 = now_ns();
            for (int i = 0; JOB_GEN(j) == seen; i++) {
                cpu_relax();
                j = atomic_load(&p->job);
                if ((i & 63) == 63 && now_ns() - t0 > SPIN_NS) break;
            }
        }
        if (JOB_GEN(j) == seen) {
            /* Counted as a sleeper before the last look at the job: a caller that posts
             * after that look sees the count and wakes us under the mutex. */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (JOB_GEN(j = atomic_load(&p->job)) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit)) return NULL;
        seen = JOB_GEN(j);
        take_chunks(p, j);
    }
}

static void parallel_for(void *ctx, kernel_fn kernel, void *const *args, uint64_t units) {
    pool_t *p = (pool_t *)ctx;
    if (p->threads == 1 || units < 2) {
        kernel(args, 0, units);
        return;
    }
    uint64_t chunks = (uint64_t)p->threads * CHUNKS_PER_THREAD;
    if (chunks > units) chunks = units;
    p->kernel = kernel;
    p->args = args;
    p->units = units;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    uint64_t j = (uint64_t)++p->generation << 32 | chunks;
    atomic_store(&p->job, j);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    take_chunks(p, j);
    /* Every chunk is claimed; wait for those still running on workers. */
    uint64_t t0 = now_ns();
    for (int i = 0; atomic_load_explicit(&p->done, memory_order_acquire) < chunks; i++) {
        if ((i & 63) == 63 && now_ns() - t0 > SPIN_NS) sched_yield();
        else cpu_relax();
    }
}

static pool_t *pool_new(int threads) {
    pool_t *p = calloc(1, sizeof *p);
    if (threads > 256) threads = 256;
    p->threads = threads < 1 ? 1 : threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->workers = calloc((size_t)p->threads, sizeof(pthread_t));
    for (int i = 1; i < p->threads; i++) {
        if (pthread_create(&p->workers[i], NULL, worker, p)) {
            p->threads = i; /* a smaller pool still runs everything */
            break;
        }
    }
    return p;
}

static void pool_free(pool_t *p) {
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, 1);
    atomic_store(&p->job, (uint64_t)++p->generation << 32);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->threads; i++) pthread_join(p->workers[i], NULL);
    free(p->workers);
    free(p);
}

/* ---- .npy ---------------------------------------------------------------------------- */

static const char *npy_descr(const char *dtype) {
    if (!strcmp(dtype, "f32")) return "<f4";
    if (!strcmp(dtype, "f64")) return "<f8";
    if (!strcmp(dtype, "i32")) return "<i4";
    if (!strcmp(dtype, "i64")) return "<i8";
    if (!strcmp(dtype, "u8")) return "|u1";
    if (!strcmp(dtype, "bool")) return "|b1";
    return NULL;
}

static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Reads input k from a .npy (checked against the model's dtype and element count) or, for
 * any other file, raw bytes of exactly the input's size. */
static void *read_input(const char *path, int k) {
    size_t len = 0;
    unsigned char *buf = read_file(path, &len);
    size_t want = M(_input_bytes)[k];
    if (!buf) {
        fprintf(stderr, "cannot read %s: %s\n", path, strerror(errno));
        exit(1);
    }
    if (len >= 10 && !memcmp(buf, "\x93NUMPY", 6)) {
        size_t hlen, off;
        if (buf[6] == 1) {
            hlen = buf[8] | (size_t)buf[9] << 8;
            off = 10;
        } else {
            hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
            off = 12;
        }
        if (off + hlen > len) {
            fprintf(stderr, "%s: truncated .npy header\n", path);
            exit(1);
        }
        char *h = malloc(hlen + 1);
        memcpy(h, buf + off, hlen);
        h[hlen] = 0;
        const char *descr = npy_descr(M(_input_dtypes)[k]);
        char want_descr[32];
        snprintf(want_descr, sizeof want_descr, "'%s'", descr ? descr : "?");
        if (!strstr(h, want_descr) || strstr(h, "'fortran_order': True")) {
            fprintf(stderr, "%s: header %s; input %s must be %s in C order\n", path, h, M(_input_names)[k], M(_input_dtypes)[k]);
            exit(1);
        }
        free(h);
        if (len - off - hlen != want) {
            fprintf(stderr, "%s: %zu bytes of data, input %s needs %zu\n", path, len - off - hlen, M(_input_names)[k], want);
            exit(1);
        }
        void *data = malloc(want ? want : 1);
        memcpy(data, buf + off + hlen, want);
        free(buf);
        return data;
    }
    if (len != want) {
        fprintf(stderr, "%s: %zu raw bytes, input %s needs %zu\n", path, len, M(_input_names)[k], want);
        exit(1);
    }
    return buf;
}

static int write_npy(const char *path, int k, const void *data) {
    char shape[512] = "";
    int rank = M(_output_ranks)[k];
    for (int d = 0; d < rank; d++) {
        char dim[32];
        snprintf(dim, sizeof dim, "%lld%s", (long long)M(_output_shapes)[k][d], rank == 1 ? "," : (d + 1 < rank ? ", " : ""));
        strncat(shape, dim, sizeof shape - strlen(shape) - 1);
    }
    const char *descr = npy_descr(M(_output_dtypes)[k]);
    if (!descr) return -1;
    char header[1024];
    int n = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shape);
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    unsigned short hlen = (unsigned short)(n + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(hlen & 0xff, f);
    fputc(hlen >> 8, f);
    fwrite(header, 1, (size_t)n, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    fwrite(data, 1, M(_output_bytes)[k], f);
    return fclose(f);
}

static void print_output(int k, const void *data) {
    printf("%s: %s[", M(_output_names)[k], M(_output_dtypes)[k]);
    for (int d = 0; d < M(_output_ranks)[k]; d++) printf("%s%lld", d ? "," : "", (long long)M(_output_shapes)[k][d]);
    printf("]");
    if (!strcmp(M(_output_dtypes)[k], "f32")) {
        const float *v = (const float *)data;
        size_t n = M(_output_elements)[k], best = 0;
        for (size_t i = 0; i < n; i++)
            if (v[i] > v[best]) best = i;
        printf(" argmax %zu (%g) first:", best, n ? v[best] : 0.0);
        for (size_t i = 0; i < n && i < 6; i++) printf(" %g", v[i]);
    }
    printf("\n");
}

/* Compares f32 output k with the .npy at path (rtol 1e-4, atol 1e-5); returns 0 if it
 * matches. */
static int expect_output(const char *path, int k, const void *data) {
    size_t len = 0;
    unsigned char *buf = read_file(path, &len);
    if (!buf || len < 12 || memcmp(buf, "\x93NUMPY", 6) || strcmp(M(_output_dtypes)[k], "f32")) {
        fprintf(stderr, "%s: not an .npy to compare f32 output %s with\n", path, M(_output_names)[k]);
        return 1;
    }
    size_t off = buf[6] == 1 ? 10 + (buf[8] | (size_t)buf[9] << 8) : 12 + (buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16);
    size_t n = M(_output_elements)[k];
    if (off > len || len - off != n * 4 || !memmem(buf, off, "'<f4'", 5)) {
        fprintf(stderr, "%s: holds %zu bytes of data; output %s is %zu f32 values\n", path, off > len ? 0 : len - off, M(_output_names)[k], n);
        return 1;
    }
    const float *got = (const float *)data;
    double max_abs = 0;
    for (size_t i = 0; i < n; i++) {
        float want;
        memcpy(&want, buf + off + 4 * i, 4);
        double d = fabs((double)got[i] - (double)want);
        if (!(d <= 1e-5 + 1e-4 * fabs((double)want))) {
            printf("  %s DIFFERS from %s at element %zu: %g vs %g\n", M(_output_names)[k], path, i, got[i], want);
            return 1;
        }
        if (d > max_abs) max_abs = d;
    }
    printf("  %s matches %s (max abs diff %.3e, rtol 1e-4, atol 1e-5)\n", M(_output_names)[k], path, max_abs);
    free(buf);
    return 0;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [--weights FILE.bin] [--threads T] [--bench N] [--out-dir DIR] [--expect OUT.npy]... INPUT...\n"
            "  one INPUT per model input (%d), in order: .npy or raw little-endian bytes;\n"
            "  --expect compares output k (in order) with a reference, rtol 1e-4, atol 1e-5\n",
            argv0, M(_num_inputs));
    exit(2);
}

int main(int argc, char **argv) {
    const char *weights = NULL, *out_dir = NULL;
    long threads = sysconf(_SC_NPROCESSORS_ONLN), bench = 0;
    const char *inputs[64], *expects[64];
    int n_in = 0, n_expect = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--weights") && i + 1 < argc) weights = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atol(argv[++i]);
        else if (!strcmp(argv[i], "--bench") && i + 1 < argc) bench = atol(argv[++i]);
        else if (!strcmp(argv[i], "--out-dir") && i + 1 < argc) out_dir = argv[++i];
        else if (!strcmp(argv[i], "--expect") && i + 1 < argc && n_expect < 64) expects[n_expect++] = argv[++i];
        else if (argv[i][0] == '-') usage(argv[0]);
        else if (n_in < 64) inputs[n_in++] = argv[i];
    }
    if (n_in != M(_num_inputs)) usage(argv[0]);

    model_t *model;
    int32_t code = M(_create)(weights, &model);
    if (code) {
        fprintf(stderr, "create: %s\n", M(_error_string)(code));
        return 1;
    }
    const void *in[64];
    void *out[64];
    for (int k = 0; k < n_in; k++) in[k] = read_input(inputs[k], k);
    for (int k = 0; k < M(_num_outputs); k++) out[k] = malloc(M(_output_bytes)[k] ? M(_output_bytes)[k] : 1);

    pool_t *pool = pool_new((int)threads);
    runner_t runner = {pool, parallel_for};
    code = M(_infer)(model, in, out, &runner);
    if (code) {
        fprintf(stderr, "run: %s\n", M(_error_string)(code));
        return 1;
    }
    for (int k = 0; k < M(_num_outputs); k++) {
        print_output(k, out[k]);
        if (out_dir) {
            char path[4096], name[256];
            size_t j = 0;
            for (const char *c = M(_output_names)[k]; *c && j + 1 < sizeof name; c++)
                name[j++] = (*c == '/' || *c == ':' || *c == ' ') ? '_' : *c;
            name[j] = 0;
            snprintf(path, sizeof path, "%s/%s.npy", out_dir, name);
            if (write_npy(path, k, out[k])) {
                fprintf(stderr, "cannot write %s\n", path);
                return 1;
            }
            printf("  written to %s\n", path);
        }
    }
    int mismatches = 0;
    for (int k = 0; k < n_expect && k < M(_num_outputs); k++) mismatches += expect_output(expects[k], k, out[k]);
    if (bench > 0) {
        double *ms = malloc((size_t)bench * sizeof *ms);
        for (long i = 0; i < bench; i++) {
            double t0 = now_ms();
            M(_infer)(model, in, out, &runner);
            ms[i] = now_ms() - t0;
        }
        qsort(ms, (size_t)bench, sizeof *ms, cmp_double);
        printf("bench: %ld runs on %ld threads: median %.3f ms, min %.3f ms, max %.3f ms\n", bench, threads, ms[bench / 2], ms[0], ms[bench - 1]);
        free(ms);
    }
    pool_free(pool);
    M(_destroy)(model);
    return mismatches ? 3 : 0;
}
