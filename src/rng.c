/* rng: CTR-DRBG over the system entropy; see rng.h. */
#include "rng.h"

#include <stdbool.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>

static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;
static bool ready;

int rng_init(void)
{
	if (ready)
		return 0;
	static const unsigned char personal[] = "otoroshictl-tcp-tunnel";
	mbedtls_entropy_init(&entropy);
	mbedtls_ctr_drbg_init(&drbg);
	int rc = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, personal, sizeof(personal) - 1);
	if (rc != 0) {
		mbedtls_ctr_drbg_free(&drbg);
		mbedtls_entropy_free(&entropy);
		return rc;
	}
	ready = true;
	return 0;
}

int rng_bytes(uint8_t *buf, size_t len)
{
	return mbedtls_ctr_drbg_random(&drbg, buf, len);
}

int rng_mbedtls(void *ctx, unsigned char *buf, size_t len)
{
	(void)ctx;
	return mbedtls_ctr_drbg_random(&drbg, buf, len);
}

void rng_finish(void)
{
	if (!ready)
		return;
	mbedtls_ctr_drbg_free(&drbg);
	mbedtls_entropy_free(&entropy);
	ready = false;
}
