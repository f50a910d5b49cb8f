/* completions: the shell completion scripts `otoroshictl completions SHELL`
 * prints, made from the option table so that they never fall behind it. */
#ifndef OTOROSHICTL_COMPLETIONS_H
#define OTOROSHICTL_COMPLETIONS_H

#include <stdio.h>

/* Prints the script for shell ("bash", "zsh" or "fish"). Returns 0, or -1
 * for an unknown shell. */
int completions_print(const char *shell, FILE *out);

#endif
