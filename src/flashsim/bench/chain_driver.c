/* chain_driver: the per-particle deployment loop (as Lamarr runs it) over C-ABI shared objects.
 *
 *   chain_driver PLAN [REPEAT]
 *
 * PLAN is a text file: the first line holds the number of particles; every further line is one stage,
 *   LIB.so SYMBOL N_IN N_OUT ROWS.f32 INDEX.i64
 * where ROWS.f32 holds the stage's input rows (float32, N_IN per row) and INDEX.i64 the (ascending) particle
 * index of each row: a particle goes through the stages whose index lists it, in plan order, one
 * `float* SYMBOL(float* out, const float* in)` call each (`SYMBOL_packed`, the same with the noise appended to
 * `in`, for flashsim's generators). Prints one JSON line with the wall time.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef float *(*abi_fn)(float *out, const float *in);

typedef struct {
  abi_fn f;
  long n_in, n_out, rows;
  float *in, *out;
  int64_t *index;
} stage_t;

static void *slurp(const char *path, long *bytes) {
  FILE *fp = fopen(path, "rb");
  if (!fp) { perror(path); exit(1); }
  fseek(fp, 0, SEEK_END);
  *bytes = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  void *buf = malloc((size_t)*bytes + 8);
  if (!buf || fread(buf, 1, (size_t)*bytes, fp) != (size_t)*bytes) { fprintf(stderr, "read %s\n", path); exit(1); }
  fclose(fp);
  return buf;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s PLAN [REPEAT]\n", argv[0]); return 2; }
  long repeat = argc > 2 ? atol(argv[2]) : 1;
  FILE *plan = fopen(argv[1], "r");
  if (!plan) { perror(argv[1]); return 1; }
  long n_particles;
  if (fscanf(plan, "%ld", &n_particles) != 1) { fprintf(stderr, "bad plan\n"); return 2; }
  stage_t st[64];
  int ns = 0;
  char lib[4096], sym[256], rows[4096], idx[4096];
  long n_in, n_out;
  while (ns < 64 && fscanf(plan, "%4095s %255s %ld %ld %4095s %4095s", lib, sym, &n_in, &n_out, rows, idx) == 6) {
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
    char packed[300];  /* generators (three-argument entry point) also export the packed two-argument form */
    snprintf(packed, sizeof packed, "%s_packed", sym);
    st[ns].f = (abi_fn)dlsym(h, packed);
    if (!st[ns].f) st[ns].f = (abi_fn)dlsym(h, sym);
    if (!st[ns].f) { fprintf(stderr, "dlsym %s: %s\n", sym, dlerror()); return 1; }
    long b1, b2;
    st[ns].in = slurp(rows, &b1);
    st[ns].index = slurp(idx, &b2);
    st[ns].n_in = n_in;
    st[ns].n_out = n_out;
    st[ns].rows = b2 / (long)sizeof(int64_t);
    if (b1 != st[ns].rows * n_in * (long)sizeof(float)) { fprintf(stderr, "%s: size mismatch\n", rows); return 2; }
    st[ns].out = malloc(sizeof(float) * (size_t)(n_out + 1));
    ns++;
  }
  fclose(plan);
  long calls = 0;
  long pos[64];
  for (int s = 0; s < ns; ++s)  /* warm-up: page in every model's code and weights */
    for (long k = 0; k < st[s].rows && k < 4; ++k) st[s].f(st[s].out, st[s].in + k * st[s].n_in);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long r = 0; r < repeat; ++r) {
    for (int s = 0; s < ns; ++s) pos[s] = 0;
    for (long i = 0; i < n_particles; ++i) {
      for (int s = 0; s < ns; ++s) {
        stage_t *S = &st[s];
        while (pos[s] < S->rows && S->index[pos[s]] == i) {
          S->f(S->out, S->in + pos[s] * S->n_in);
          pos[s]++;
          calls++;
        }
      }
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  printf("{\"particles\": %ld, \"repeat\": %ld, \"calls\": %ld, \"seconds\": %.9f, \"particles_per_s\": %.3f}\n",
         n_particles, repeat, calls, sec, sec > 0 ? (double)(n_particles * repeat) / sec : 0.0);
  return 0;
}
