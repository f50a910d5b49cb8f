/* What the unit tests' TLS servers need that mbedTLS 2.28 and 3.x spell
 * differently. */
#ifndef OTOROSHICTL_TEST_MBEDTLS_COMPAT_H
#define OTOROSHICTL_TEST_MBEDTLS_COMPAT_H

#include <mbedtls/pk.h>
#include <mbedtls/version.h>

#include "rng.h"

static inline int test_parse_keyfile(mbedtls_pk_context *key, const char *path)
{
#if MBEDTLS_VERSION_MAJOR >= 3
	return mbedtls_pk_parse_keyfile(key, path, NULL, rng_mbedtls, NULL);
#else
	return mbedtls_pk_parse_keyfile(key, path, NULL);
#endif
}

#endif
