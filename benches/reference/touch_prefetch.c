/* Does software prefetch speed up the mmap-touch reference? (docs/bench-merge.md,
 * "2026-12-02, 14:00 UTC".) Maps every file, sums it as u64 words on one thread,
 * with and without a prefetch DIST bytes ahead (one per 64-byte line), ROUNDS
 * times alternating, and prints the wall time, the minor faults and how much of
 * the mapping the kernel mapped with 2 MiB (PMD) entries.
 *
 *   cc -O2 -march=native -o /tmp/touch_prefetch benches/reference/touch_prefetch.c
 *   /tmp/touch_prefetch 8192 3 ~/.cache/merge-bench/m?/model.safetensors
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static long minflt(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return r.ru_minflt;
}

static long pmd_mapped_kb(void) {
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "FilePmdMapped: %ld kB", &kb) == 1) break;
  if (f) fclose(f);
  return kb;
}

/* One pass over all files: map, sum (prefetching `dist` ahead if > 0), unmap. */
static uint64_t touch(char **paths, int n, size_t dist, double *secs, long *faults, long *pmd_kb) {
  const uint64_t *maps[64];
  size_t lens[64];
  uint64_t sum = 0;
  for (int i = 0; i < n; i++) {
    int fd = open(paths[i], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { perror(paths[i]); exit(1); }
    lens[i] = st.st_size;
    maps[i] = mmap(NULL, lens[i], PROT_READ, MAP_SHARED, fd, 0);
    if (maps[i] == MAP_FAILED) { perror("mmap"); exit(1); }
    close(fd);
  }
  long f0 = minflt();
  double t0 = now();
  for (int i = 0; i < n; i++) {
    const uint64_t *q = maps[i];
    size_t words = lens[i] / 8;
    for (size_t j = 0; j < words; j++) {
      if (dist && (j & 7) == 0) __builtin_prefetch((const char *)(q + j) + dist);
      sum += q[j];
    }
  }
  *secs = now() - t0;
  *faults = minflt() - f0;
  *pmd_kb = pmd_mapped_kb();
  for (int i = 0; i < n; i++) munmap((void *)maps[i], lens[i]);
  return sum;
}

int main(int argc, char **argv) {
  if (argc < 4 || argc - 3 > 64) {
    fprintf(stderr, "usage: %s DIST_BYTES ROUNDS FILE... (at most 64 files)\n", argv[0]);
    return 2;
  }
  size_t dist = strtoul(argv[1], NULL, 10);
  int rounds = atoi(argv[2]);
  for (int r = 0; r < rounds; r++)
    for (int p = 0; p < 2; p++) {
      double secs;
      long faults, pmd_kb;
      uint64_t sum = touch(argv + 3, argc - 3, p ? dist : 0, &secs, &faults, &pmd_kb);
      printf("round %d, prefetch %6zu B: %.3f s, %ld minor faults, FilePmdMapped %ld kB [%llu]\n",
             r + 1, p ? dist : 0, secs, faults, pmd_kb, (unsigned long long)sum);
    }
  return 0;
}
