/* completions: bash, zsh and fish scripts; see completions.h. */
#include "completions.h"

#include <stdbool.h>
#include <string.h>

#include "cli.h"

#define ACCESS_TYPES "apikey bearer jwt session public"
#define LOG_FORMATS "human json"
/* Options whose value is a file name. */
static bool takes_file(const char *name)
{
	static const char *const files[] = {"ca-cert", "client-cert", "client-key", "config", "proxy-ca-cert",
					     "apikey-client-secret-file", "bearer-token-file", "session-token-file"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (strcmp(name, files[i]) == 0)
			return true;
	return false;
}

static void print_bash(FILE *out)
{
	fputs("# bash completion for otoroshictl\n"
	      "_otoroshictl_profiles() {\n"
	      "    local i config=()\n"
	      "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
	      "        [ \"${COMP_WORDS[i]}\" = --config ] && config=(--config \"${COMP_WORDS[i+1]}\")\n"
	      "    done\n"
	      "    otoroshictl tcp-tunnel \"${config[@]}\" --list-profiles 2>/dev/null | cut -f1 | uniq\n"
	      "}\n"
	      "_otoroshictl() {\n"
	      "    local cur prev words cword\n"
	      "    cur=\"${COMP_WORDS[COMP_CWORD]}\"\n"
	      "    prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
	      "    local cmd=\"\" i\n"
	      "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
	      "        case \"${COMP_WORDS[i]}\" in\n"
	      "            tcp-tunnel|tt|help|completions) cmd=\"${COMP_WORDS[i]}\"; break ;;\n"
	      "        esac\n"
	      "    done\n"
	      "    case \"$cmd\" in\n"
	      "    \"\")\n"
	      "        COMPREPLY=($(compgen -W \"tcp-tunnel tt help completions -v --verbose -h --help -V --version\" -- \"$cur\"))\n"
	      "        return ;;\n"
	      "    help)\n"
	      "        COMPREPLY=($(compgen -W \"tcp-tunnel tt completions\" -- \"$cur\")); return ;;\n"
	      "    completions)\n"
	      "        COMPREPLY=($(compgen -W \"bash zsh fish\" -- \"$cur\")); return ;;\n"
	      "    esac\n"
	      "    case \"$prev\" in\n"
	      "    --access-type) COMPREPLY=($(compgen -W \"" ACCESS_TYPES "\" -- \"$cur\")); return ;;\n"
	      "    --log-format) COMPREPLY=($(compgen -W \"" LOG_FORMATS "\" -- \"$cur\")); return ;;\n"
	      "    --profile|-p) COMPREPLY=($(compgen -W \"$(_otoroshictl_profiles)\" -- \"$cur\")); return ;;\n",
	      out);
	fputs("    ", out);
	bool first = true;
	char s;
	bool v;
	for (size_t i = 0; cli_option(i, &s, &v) != NULL; i++) {
		const char *name = cli_option(i, &s, &v);
		if (takes_file(name)) {
			fprintf(out, "%s--%s", first ? "" : "|", name);
			first = false;
		}
	}
	fputs(") compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n", out);
	fputs("    ", out);
	first = true;
	for (size_t i = 0; cli_option(i, &s, &v) != NULL; i++) {
		const char *name = cli_option(i, &s, &v);
		if (v && !takes_file(name) && strcmp(name, "access-type") != 0 && strcmp(name, "log-format") != 0 &&
		    strcmp(name, "profile") != 0) {
			fprintf(out, "%s--%s", first ? "" : "|", name);
			if (s != 0)
				fprintf(out, "|-%c", s);
			first = false;
		}
	}
	fputs(") return ;;\n    esac\n    COMPREPLY=($(compgen -W \"", out);
	for (size_t i = 0; cli_option(i, &s, &v) != NULL; i++) {
		fprintf(out, "--%s ", cli_option(i, &s, &v));
		if (s)
			fprintf(out, "-%c ", s);
	}
	fputs("\" -- \"$cur\"))\n"
	      "}\n"
	      "complete -F _otoroshictl otoroshictl\n",
	      out);
}

static void print_zsh(FILE *out)
{
	fputs("#compdef otoroshictl\n"
	      "# zsh completion for otoroshictl\n"
	      "_otoroshictl_profiles() {\n"
	      "    local -a profiles\n"
	      "    profiles=(${(f)\"$(otoroshictl tcp-tunnel --list-profiles 2>/dev/null | cut -f1 | uniq)\"})\n"
	      "    _describe 'profile' profiles\n"
	      "}\n"
	      "_otoroshictl_tcp_tunnel() {\n"
	      "    _arguments -s \\\n",
	      out);
	char s;
	bool v;
	for (size_t i = 0; cli_option(i, &s, &v) != NULL; i++) {
		const char *name = cli_option(i, &s, &v);
		const char *action = "";
		if (strcmp(name, "access-type") == 0)
			action = ":access type:(" ACCESS_TYPES ")";
		else if (strcmp(name, "log-format") == 0)
			action = ":log format:(" LOG_FORMATS ")";
		else if (strcmp(name, "profile") == 0)
			action = ":profile:_otoroshictl_profiles";
		else if (takes_file(name))
			action = ":file:_files";
		else if (v)
			action = ":value: ";
		if (s)
			fprintf(out, "        '(-%c --%s)'{-%c,--%s}'[%s]%s' \\\n", s, name, s, name, name, action);
		else
			fprintf(out, "        '--%s[%s]%s' \\\n", name, name, action);
	}
	fputs("        && return 0\n"
	      "}\n"
	      "_otoroshictl() {\n"
	      "    local curcontext=\"$curcontext\" state line\n"
	      "    _arguments -C \\\n"
	      "        '(-v --verbose)'{-v,--verbose}'[turn debugging information on]' \\\n"
	      "        '(-h --help)'{-h,--help}'[print help]' \\\n"
	      "        '(-V --version)'{-V,--version}'[print version]' \\\n"
	      "        '1: :->command' \\\n"
	      "        '*:: :->args'\n"
	      "    case $state in\n"
	      "    command)\n"
	      "        local -a commands\n"
	      "        commands=('tcp-tunnel:expose a remote TCP service locally through Otoroshi'\n"
	      "                  'tt:alias of tcp-tunnel' 'help:print help' 'completions:print a completion script')\n"
	      "        _describe 'command' commands ;;\n"
	      "    args)\n"
	      "        case $line[1] in\n"
	      "        tcp-tunnel|tt) _otoroshictl_tcp_tunnel ;;\n"
	      "        completions) _values 'shell' bash zsh fish ;;\n"
	      "        help) _values 'command' tcp-tunnel tt completions ;;\n"
	      "        esac ;;\n"
	      "    esac\n"
	      "}\n"
	      "_otoroshictl \"$@\"\n",
	      out);
}

static void print_fish(FILE *out)
{
	fputs("# fish completion for otoroshictl\n"
	      "set -l cmds tcp-tunnel tt help completions\n"
	      "complete -c otoroshictl -f\n"
	      "complete -c otoroshictl -n \"not __fish_seen_subcommand_from $cmds\" -a 'tcp-tunnel tt' -d 'Expose a remote TCP service through Otoroshi'\n"
	      "complete -c otoroshictl -n \"not __fish_seen_subcommand_from $cmds\" -a help -d 'Print help'\n"
	      "complete -c otoroshictl -n \"not __fish_seen_subcommand_from $cmds\" -a completions -d 'Print a completion script'\n"
	      "complete -c otoroshictl -n '__fish_seen_subcommand_from completions' -a 'bash zsh fish'\n",
	      out);
	char s;
	bool v;
	for (size_t i = 0; cli_option(i, &s, &v) != NULL; i++) {
		const char *name = cli_option(i, &s, &v);
		fprintf(out, "complete -c otoroshictl -n '__fish_seen_subcommand_from tcp-tunnel tt' -l %s", name);
		if (s)
			fprintf(out, " -s %c", s);
		if (strcmp(name, "access-type") == 0)
			fputs(" -x -a '" ACCESS_TYPES "'", out);
		else if (strcmp(name, "log-format") == 0)
			fputs(" -x -a '" LOG_FORMATS "'", out);
		else if (strcmp(name, "profile") == 0)
			fputs(" -x -a '(otoroshictl tcp-tunnel --list-profiles 2>/dev/null | cut -f1 | uniq)'", out);
		else if (takes_file(name))
			fputs(" -r -F", out);
		else if (v)
			fputs(" -x", out);
		fputc('\n', out);
	}
}

int completions_print(const char *shell, FILE *out)
{
	if (strcmp(shell, "bash") == 0)
		print_bash(out);
	else if (strcmp(shell, "zsh") == 0)
		print_zsh(out);
	else if (strcmp(shell, "fish") == 0)
		print_fish(out);
	else
		return -1;
	return 0;
}
