/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A plain driver for LLVMFuzzerTestOneInput() where libFuzzer is not
 * available (gcc builds): replays every file of a corpus folder, then N
 * mutations of them (bit flips, byte sets, inserts, deletes, truncations,
 * splices) from a seeded xorshift generator, so the CI run is deterministic.
 * usage: fuzz_proto_driver CORPUS_DIR [N] [SEED]
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_IN 4096

static uint64_t s;

static uint64_t rnd(void)
{
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

int main(int argc, char **argv)
{
    static uint8_t corpus[256][MAX_IN];
    static size_t lens[256];
    int n = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR [N] [SEED]\n", argv[0]);
        return 2;
    }
    long iters = argc > 2 ? atol(argv[2]) : 100000;
    s = argc > 3 ? strtoull(argv[3], NULL, 10) : 88172645463325252ull;
    DIR *d = opendir(argv[1]);
    if (!d) {
        perror(argv[1]);
        return 2;
    }
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        char p[4096];
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "%s/%s", argv[1], e->d_name);
        FILE *f = fopen(p, "rb");
        if (!f)
            continue;
        lens[n] = fread(corpus[n], 1, MAX_IN, f);
        fclose(f);
        LLVMFuzzerTestOneInput(corpus[n], lens[n]);
        n++;
    }
    closedir(d);
    if (!n) {
        fprintf(stderr, "empty corpus\n");
        return 2;
    }
    for (long i = 0; i < iters; i++) {
        uint8_t buf[MAX_IN * 2];
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
                if (len < MAX_IN) {
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
                if (pos + add > MAX_IN)
                    add = MAX_IN - pos;
                memcpy(buf + pos, corpus[j] + from, add);
                len = pos + add;
            }
            }
        }
        /* exact-size copy so AddressSanitizer catches any over-read */
        uint8_t *in = malloc(len ? len : 1);
        memcpy(in, buf, len);
        LLVMFuzzerTestOneInput(in, len);
        free(in);
    }
    printf("fuzz_proto_driver: %d corpus inputs, %ld mutations, no failure\n", n, iters);
    return 0;
}
