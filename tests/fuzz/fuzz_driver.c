/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A plain driver for LLVMFuzzerTestOneInput() where libFuzzer is not linked
 * (gcc builds, and clang builds other than LOKI_SANITIZE=fuzz): replays every
 * file of a corpus folder in name order, then N mutations of them (bit flips,
 * byte sets, inserts, deletes, truncations, splices) from a seeded xorshift
 * generator, so a ctest run is deterministic and any failure reproduces with
 * the same arguments. An input that crashes is written to ./fuzz-crash-<pid>
 * first, to be replayed alone (a file argument) or added to the corpus.
 * usage: fuzz_<target> CORPUS_DIR [N] [SEED]   or   fuzz_<target> FILE...
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FILE (1u << 20) /* a corpus file larger than this is an error, not cut short */

static uint64_t s;

static uint64_t rnd(void)
{
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

/* The input under test, for the crash handler. */
static const uint8_t *cur;
static size_t cur_len;

static void on_crash(int sig)
{
    char path[64];
    int n = snprintf(path, sizeof(path), "fuzz-crash-%d", (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0 && n > 0) {
        size_t off = 0;
        while (off < cur_len) {
            ssize_t w = write(fd, cur + off, cur_len - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        close(fd);
        const char msg[] = "fuzz driver: crashing input written to ";
        (void)!write(2, msg, sizeof(msg) - 1);
        (void)!write(2, path, (size_t)n);
        (void)!write(2, "\n", 1);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void run(const uint8_t *data, size_t len)
{
    /* an exact-size copy, so AddressSanitizer catches any over-read */
    uint8_t *in = malloc(len ? len : 1);
    if (!in) {
        perror("malloc");
        exit(2);
    }
    memcpy(in, data, len);
    cur = in;
    cur_len = len;
    LLVMFuzzerTestOneInput(in, len);
    cur = NULL;
    cur_len = 0;
    free(in);
}

/* Reads @path whole into *@buf (malloc'ed); returns its size, or -1 with a message. */
static long read_file(const char *path, uint8_t **buf)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    *buf = malloc(MAX_FILE + 1);
    size_t n = *buf ? fread(*buf, 1, MAX_FILE + 1, f) : 0;
    int bad = !*buf || ferror(f);
    fclose(f);
    if (bad || n > MAX_FILE) {
        fprintf(stderr, "%s: %s\n", path, bad ? "cannot read" : "larger than 1 MiB");
        free(*buf);
        return -1;
    }
    uint8_t *fit = realloc(*buf, n ? n : 1);
    if (fit)
        *buf = fit;
    return (long)n;
}

static int skip_dot(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

int main(int argc, char **argv)
{
    struct stat st;
    if (argc < 2 || stat(argv[1], &st)) {
        fprintf(stderr, "usage: %s CORPUS_DIR [N] [SEED] | %s FILE...\n", argv[0], argv[0]);
        return 2;
    }
    static const int sigs[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], on_crash);

    if (!S_ISDIR(st.st_mode)) { /* replay the files named, nothing else */
        for (int i = 1; i < argc; i++) {
            uint8_t *b;
            long n = read_file(argv[i], &b);
            if (n < 0)
                return 2;
            run(b, (size_t)n);
            free(b);
        }
        printf("%s: %d inputs, no failure\n", argv[0], argc - 1);
        return 0;
    }

    long iters = argc > 2 ? atol(argv[2]) : 100000;
    s = argc > 3 ? strtoull(argv[3], NULL, 10) : 88172645463325252ull;
    if (!s)
        s = 88172645463325252ull; /* xorshift's one fixed point */
    struct dirent **names;
    int n = scandir(argv[1], &names, skip_dot, alphasort);
    if (n <= 0) {
        fprintf(stderr, "%s: %s\n", argv[1], n ? "cannot read" : "empty corpus");
        return 2;
    }
    uint8_t **corpus = calloc((size_t)n, sizeof(*corpus));
    size_t *lens = calloc((size_t)n, sizeof(*lens));
    size_t max_len = 1;
    if (!corpus || !lens)
        return 2;
    for (int i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", argv[1], names[i]->d_name);
        long len = read_file(p, &corpus[i]);
        if (len < 0)
            return 2;
        lens[i] = (size_t)len;
        if (lens[i] > max_len)
            max_len = lens[i];
        run(corpus[i], lens[i]);
        free(names[i]);
    }
    free(names);

    /* mutants grow to at most twice the largest input */
    size_t cap = 2 * max_len;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return 2;
    for (long i = 0; i < iters; i++) {
        int k = (int)(rnd() % (uint64_t)n);
        size_t len = lens[k];
        memcpy(buf, corpus[k], len);
        int muts = 1 + (int)(rnd() % 4);
        for (int m = 0; m < muts; m++) {
            size_t pos = len ? rnd() % len : 0;
            switch (rnd() % 6) {
            case 0:
                if (len)
                    buf[pos] ^= (uint8_t)(1u << (rnd() % 8));
                break;
            case 1:
                if (len)
                    buf[pos] = (uint8_t)rnd();
                break;
            case 2:
                if (len < cap) {
                    memmove(buf + pos + 1, buf + pos, len - pos);
                    buf[pos] = (uint8_t)rnd();
                    len++;
                }
                break;
            case 3:
                if (len) {
                    memmove(buf + pos, buf + pos + 1, len - pos - 1);
                    len--;
                }
                break;
            case 4:
                len = pos;
                break;
            default: { /* splice in the tail of another input */
                int j = (int)(rnd() % (uint64_t)n);
                size_t from = lens[j] ? rnd() % lens[j] : 0;
                size_t add = lens[j] - from;
                if (pos + add > cap)
                    add = cap - pos;
                memcpy(buf + pos, corpus[j] + from, add);
                len = pos + add;
            }
            }
        }
        run(buf, len);
    }
    for (int i = 0; i < n; i++)
        free(corpus[i]);
    free(corpus);
    free(lens);
    free(buf);
    printf("%s: %d corpus inputs, %ld mutations, no failure\n", argv[0], n, iters);
    return 0;
}
