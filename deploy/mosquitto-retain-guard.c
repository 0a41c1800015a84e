/*
 * banc-lfp — Mosquitto plugin: a bench ESP32 account leaves no retained message but its
 * own bancX/esp/status (contract v3 §2, §8).
 *
 * Why: a retained message on bancX/step, bms/data, bms/replay or ri/results is delivered to
 * the next banc.py that subscribes, as if it were new: it can end a test (a stale "9" on
 * step) or rewind it; one on bancX/banc/status would speak for banc.py to the kiosk. The ESP
 * retains nothing else; this guard makes sure a faulty or compromised firmware cannot.
 *
 * Why a plugin: Mosquitto 2.0.11 (Debian 12) has no configuration option for this.
 * acl_file grants read/write per topic and never looks at the retain flag;
 * retain_available false applies to every client and topic, and would also refuse the
 * ESP's retained bancX/esp/status (birth and last will) and the Pi's bancX/banc/status.
 * A version 5 plugin's MOSQ_EVT_ACL_CHECK callback, on the other hand, receives the
 * retain flag of every write the broker checks: a PUBLISH, a last will when it is sent,
 * and a stored retained message re-checked against its publisher before delivery
 * (check_retain_source, on by default: a retained message an ESP left before this guard
 * was installed is no longer delivered either).
 *
 * Rule: a write with retain set, on any topic but +/esp/status, by any account but the Pi's
 * (plugin_opt_pi_account), is denied: the broker
 * drops the message and acknowledges it as usual (reason code 0x87 "not authorised" to an
 * MQTT v5 client), the client stays connected. Every other check is deferred
 * (MOSQ_ERR_PLUGIN_DEFER) to acl_file, which decides exactly as before. The Pi's account
 * is exempt so that maintenance can still clear a retained message (mosquitto_pub -r -n).
 * Mosquitto asks the plugins before acl_file (their callbacks are registered first, at
 * start), so a deny here is final; tests/test_deploy.py checks it on the real broker.
 *
 * Built and installed by deploy/install.sh (gcc, headers from Debian's mosquitto-dev and
 * libmosquitto-dev), loaded by deploy/mosquitto.conf:
 *     plugin /usr/local/lib/banc-lfp/mosquitto-retain-guard.so
 *     plugin_opt_pi_account pi-banc
 * The broker itself provides the mosquitto_* functions called here: no library to link.
 */
#define _POSIX_C_SOURCE 200809L /* strdup */

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

/* The one topic an ESP retains on: its own status (birth and last will). Everywhere else a
 * retained message from an ESP is refused: on the topics banc.py reads as events (step,
 * bms/data, bms/replay, ri/results) it would be taken for news by the next banc.py, and on the
 * others (banc/status, command, security, nJ...) it would speak for the Pi or stay on show.
 * "+" is the bench (an ESP account may only write under its own name anyway: acl_file's
 * "pattern readwrite %u/#"). */
static const char *const RETAINED_BY_ESP = "+/esp/status";

static mosquitto_plugin_id_t *plugin_id = NULL;
static char *pi_account = NULL;
static time_t last_warning = 0;

static bool guarded_topic(const char *topic)
{
	bool match = false;

	if(mosquitto_topic_matches_sub(RETAINED_BY_ESP, topic, &match) != MOSQ_ERR_SUCCESS){
		return true;  /* not a topic we can read: refused rather than let through */
	}
	return !match;
}

static int acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *username;
	time_t now;

	(void)event;
	(void)userdata;
	if(ed->access != MOSQ_ACL_WRITE || !ed->retain || !guarded_topic(ed->topic)){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	username = mosquitto_client_username(ed->client);
	if(username && strcmp(username, pi_account) == 0){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	/* Said in the log at most once a minute: a firmware that retains bms/data would
	 * otherwise write a line every second. */
	now = time(NULL);
	if(now - last_warning >= 60){
		last_warning = now;
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				"banc-lfp: retained message from account %s on %s refused: an ESP32 retains "
				"only its bancN/esp/status (deploy/FIRMWARE_ESP32.md)",
				username ? username : "(none)", ed->topic);
	}
	return MOSQ_ERR_ACL_DENIED;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;

	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	int i;

	(void)userdata;
	for(i = 0; i < option_count; i++){
		if(strcmp(options[i].key, "pi_account") == 0 && options[i].value[0]){
			free(pi_account);
			pi_account = strdup(options[i].value);
			if(!pi_account){
				return MOSQ_ERR_NOMEM;
			}
		}
	}
	if(!pi_account){
		/* A configuration error must stop the broker, not leave the guard half-working. */
		mosquitto_log_printf(MOSQ_LOG_ERR, "banc-lfp: mosquitto-retain-guard needs plugin_opt_pi_account");
		return MOSQ_ERR_INVAL;
	}
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, acl_check, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	if(plugin_id){
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, acl_check, NULL);
	}
	free(pi_account);
	pi_account = NULL;
	return MOSQ_ERR_SUCCESS;
}
