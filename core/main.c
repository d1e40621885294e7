/*
 * main.c - plexmqd's command line.  Everything else lives in daemon.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include <plexmq/version.h>

#include "daemon.h"
#include "pmq_build.h"

#ifndef PMQ_SYSCONFDIR
#define PMQ_SYSCONFDIR "/etc"
#endif

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: plexmqd [-c FILE] [--plugin-dir DIR] [--check-config]\n"
	    "\n"
	    "  -c, --config FILE   configuration file (default %s/plexmq.ini)\n"
	    "  -p, --plugin-dir DIR\n"
	    "                      load plugins from DIR (overrides plugin_dir)\n"
	    "  -t, --check-config  load and check the configuration and every\n"
	    "                      plugin it names, then exit (0 when valid)\n"
	    "  -V, --version       print versions and exit\n"
	    "  -h, --help          print this help and exit\n",
	    PMQ_SYSCONFDIR);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "plugin-dir", required_argument, NULL, 'p' },
		{ "check-config", no_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct daemon_opts o = { PMQ_SYSCONFDIR "/plexmq.ini", NULL, 0 };
	int ch;

	while ((ch = getopt_long(argc, argv, "c:p:tVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o.config_path = optarg;
			break;
		case 'p':
			o.plugin_dir = optarg;
			break;
		case 't':
			o.check_only = 1;
			break;
		case 'V':
			printf("plexmqd %s (plugin ABI %d.%d)\n", PACKAGE_VERSION,
			    PMQ_ABI_MAJOR, PMQ_ABI_MINOR);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "plexmqd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	return daemon_run(&o);
}
