/* The native anchor of the OPC UA read benchmark: open62541's C client reads
 * COUNT nodes ns=NS;s=V<5i> (Doubles holding 2.5*i, as both benchmark servers
 * serve them) with one batched Read per cycle for SECONDS, after checking the
 * first cycle's values and 20 warm-up cycles, and prints one JSON line:
 * values per second, its own CPU per value, its peak RSS.
 *   open62541_read_bench URL NS COUNT SECONDS                               */
#include <open62541/client.h>
#include <open62541/client_config_default.h>
#include <open62541/client_highlevel.h>
#include <open62541/plugin/log_stdout.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

/* One Read of every node; on the first, each value is checked. */
static int read_all(UA_Client *client, UA_ReadRequest *request, size_t count, int check) {
    UA_ReadResponse response = UA_Client_Service_read(client, *request);
    int ok = response.responseHeader.serviceResult == UA_STATUSCODE_GOOD && response.resultsSize == count;
    for (size_t i = 0; ok && check && i < count; i++) {
        UA_DataValue *dv = &response.results[i];
        ok = dv->hasValue && UA_Variant_hasScalarType(&dv->value, &UA_TYPES[UA_TYPES_DOUBLE]) &&
             *(UA_Double *)dv->value.data == 2.5 * i;
        if (!ok) fprintf(stderr, "node %zu: not 2.5 * %zu\n", i, i);
    }
    UA_ReadResponse_clear(&response);
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: open62541_read_bench URL NS COUNT SECONDS\n");
        return 2;
    }
    UA_UInt16 ns = (UA_UInt16)atoi(argv[2]);
    size_t count = (size_t)atol(argv[3]);
    double seconds = atof(argv[4]);

    UA_Client *client = UA_Client_new();
    UA_ClientConfig *config = UA_Client_getConfig(client);
    UA_ClientConfig_setDefault(config);
    if (UA_Client_connect(client, argv[1]) != UA_STATUSCODE_GOOD) {
        fprintf(stderr, "cannot connect to %s\n", argv[1]);
        return 1;
    }
    UA_ReadValueId *ids = (UA_ReadValueId *)UA_Array_new(count, &UA_TYPES[UA_TYPES_READVALUEID]);
    for (size_t i = 0; i < count; i++) {
        char name[32];
        snprintf(name, sizeof name, "V%zu", 5 * i);
        ids[i].nodeId = UA_NODEID_STRING_ALLOC(ns, name);
        ids[i].attributeId = UA_ATTRIBUTEID_VALUE;
    }
    UA_ReadRequest request;
    UA_ReadRequest_init(&request);
    request.nodesToRead = ids;
    request.nodesToReadSize = count;
    request.timestampsToReturn = UA_TIMESTAMPSTORETURN_BOTH;

    if (!read_all(client, &request, count, 1)) return 1;
    for (int i = 0; i < 20; i++) read_all(client, &request, count, 0);
    double cpu = cpu_seconds(), started = now(), end = started + seconds;
    long cycles = 0;
    while (now() < end) {
        if (!read_all(client, &request, count, 0)) return 1;
        cycles++;
    }
    double elapsed = now() - started;
    cpu = cpu_seconds() - cpu;
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    double values = (double)cycles * count;
    printf("{\"valuesPerSec\":%.1f,\"cpuMicrosPerValue\":%.5f,\"peakRssMb\":%.1f}\n", values / elapsed,
           cpu / values * 1e6, usage.ru_maxrss / 1024.0);
    request.nodesToRead = NULL;
    request.nodesToReadSize = 0;
    UA_Array_delete(ids, count, &UA_TYPES[UA_TYPES_READVALUEID]);
    UA_Client_disconnect(client);
    UA_Client_delete(client);
    return 0;
}
