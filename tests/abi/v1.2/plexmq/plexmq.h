/*
 * plexmq/plexmq.h - the whole plugin ABI in one include.  Plugins include
 * this (or the single headers) and nothing from core/.
 */
#ifndef PLEXMQ_PLEXMQ_H
#define PLEXMQ_PLEXMQ_H

#include "version.h"
#include "types.h"
#include "host.h"
#include "plugin.h"
#include "transport.h"
#include "storage.h"

#endif /* PLEXMQ_PLEXMQ_H */
