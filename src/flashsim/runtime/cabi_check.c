/* cabi_check: dlopen a flashsim (or scikinC) C-ABI shared object and call it once per particle.
 *
 *   cabi_check LIB.so SYMBOL IN.f32 OUT.f32 [N_IN N_OUT [REPEAT]]
 *
 * IN.f32 holds rows of N_IN float32 (raw, row-major). The function `float* SYMBOL(float* out, const float* in)`
 * is called once per row, REPEAT times over the file (default 1; after an untimed warm-up on the first rows);
 * the outputs of the last pass go to OUT.f32.
 * N_IN / N_OUT default to SYMBOL_n_in() / SYMBOL_n_out() when the library exports them.
 * Prints one JSON line: n_random, rows, calls, seconds, ns_per_call.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef float *(*abi_fn)(float *out, const float *in);
typedef float *(*gen_fn)(float *out, const float *in, const float *random);
typedef int (*size_fn)(void);

static void *sym(void *lib, const char *base, const char *suffix) {
  char name[512];
  snprintf(name, sizeof name, "%s%s", base, suffix);
  return dlsym(lib, name);
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s LIB.so SYMBOL IN.f32 OUT.f32 [N_IN N_OUT [REPEAT]]\n", argv[0]);
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
  abi_fn f = (abi_fn)sym(lib, argv[2], "");
  if (!f) { fprintf(stderr, "dlsym %s: %s\n", argv[2], dlerror()); return 1; }
  size_fn fin = (size_fn)sym(lib, argv[2], "_n_in"), fout = (size_fn)sym(lib, argv[2], "_n_out");
  long n_in = argc > 6 ? atol(argv[5]) : (fin ? fin() : -1);
  long n_out = argc > 6 ? atol(argv[6]) : (fout ? fout() : -1);
  long repeat = argc > 7 ? atol(argv[7]) : 1;
  if (n_in <= 0 || n_out <= 0) { fprintf(stderr, "unknown input/output width: pass N_IN N_OUT\n"); return 2; }
  if (fin && fin() != n_in) { fprintf(stderr, "N_IN %ld != %s_n_in() = %d\n", n_in, argv[2], fin()); return 2; }
  size_fn frnd = (size_fn)sym(lib, argv[2], "_n_random");
  long n_rnd = frnd ? frnd() : 0;
  gen_fn g = (gen_fn)f;
#define CALL(o, i) (n_rnd ? g((o), (i), (i) + n_in - n_rnd) : f((o), (i)))

  FILE *fp = fopen(argv[3], "rb");
  if (!fp) { perror(argv[3]); return 1; }
  fseek(fp, 0, SEEK_END);
  long bytes = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  long rows = bytes / (long)(sizeof(float) * n_in);
  float *in = malloc(sizeof(float) * (size_t)(rows * n_in + 1));
  float *out = malloc(sizeof(float) * (size_t)(rows * n_out + 1));
  if (!in || !out || fread(in, sizeof(float), (size_t)(rows * n_in), fp) != (size_t)(rows * n_in)) {
    fprintf(stderr, "cannot read %ld rows from %s\n", rows, argv[3]);
    return 1;
  }
  fclose(fp);

  for (long i = 0; i < rows && i < 16; ++i) CALL(out + i * n_out, in + i * n_in);  /* warm-up: page in code, data */
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long r = 0; r < repeat; ++r)
    for (long i = 0; i < rows; ++i) CALL(out + i * n_out, in + i * n_in);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);

  FILE *fo = fopen(argv[4], "wb");
  if (!fo || fwrite(out, sizeof(float), (size_t)(rows * n_out), fo) != (size_t)(rows * n_out)) {
    perror(argv[4]);
    return 1;
  }
  fclose(fo);
  long calls = rows * repeat;
  printf("{\"n_random\": %ld, \"rows\": %ld, \"calls\": %ld, \"seconds\": %.9f, \"ns_per_call\": %.3f}\n", n_rnd, rows, calls, s,
         calls ? 1e9 * s / (double)calls : 0.0);
  free(in);
  free(out);
  dlclose(lib);
  return 0;
}
