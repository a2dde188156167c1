/* open62541 1.5 (built from the source vendored in the crates.io crate
 * open62541-sys: scripts/open62541.mjs) as an OPC UA peer: security None,
 * anonymous, on 127.0.0.1:PORT, printing "listening PORT" once ready.
 * Its namespace urn:bifrost:simulator holds the built-in simulator's
 * variables, typed and valued alike: V<i> is a Double i*0.5, an Int32 i, a
 * Boolean i%2==1, a Float i*0.25 or a String "v<i>" by i%5, read-only when
 * i%7==6, in a folder Simulation under Objects. With `changing`, every
 * Double V<i> is rewritten each second as i*0.5 plus the seconds since start.
 * With `secure`, it makes a certificate (RSA 4096, naming 127.0.0.1), also
 * listens on 127.0.0.2 (which the certificate does not name), and also
 * offers every security policy in Sign and SignAndEncrypt (the deprecated
 * Basic128Rsa15 and Basic256 too), the user
 * "operator" (password "secret-pw"), and accepts any client certificate.
 * Instead of `secure`, certificates made with OpenSSL (RSA 2048) that a
 * client's checks must tell apart: `secure-ca:FILE` signs the server's with a
 * CA of its own, written to FILE (DER); `secure-expired` is self-signed and
 * expired yesterday; `secure-wrong-uri` names another application URI.
 *   open62541_server PORT [VARIABLES [changing] [secure|secure-ca:FILE|secure-expired|secure-wrong-uri]] */
#include <open62541/plugin/accesscontrol_default.h>
#include <open62541/plugin/certificategroup_default.h>
#include <open62541/plugin/create_certificate.h>
#include <open62541/plugin/log_stdout.h>
#include <open62541/server.h>
#include <open62541/server_config_default.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile UA_Boolean running = true;

static void stop(int sig) {
    (void)sig;
    running = false;
}

static unsigned variable_count;
static UA_UInt16 variable_ns;
static time_t started;

/* Every Double variable moves: i*0.5 plus the seconds since start. */
static void change(UA_Server *server, void *data) {
    (void)data;
    double seconds = (double)(time(NULL) - started);
    for (unsigned i = 0; i < variable_count; i += 5) {
        char name[32];
        snprintf(name, sizeof name, "V%u", i);
        UA_Double d = i * 0.5 + seconds;
        UA_Variant value;
        UA_Variant_setScalar(&value, &d, &UA_TYPES[UA_TYPES_DOUBLE]);
        UA_Server_writeValue(server, UA_NODEID_STRING(variable_ns, name), value);
    }
}

static void add_variable(UA_Server *server, UA_UInt16 ns, UA_NodeId folder, unsigned i) {
    char name[32];
    snprintf(name, sizeof name, "V%u", i);
    UA_VariableAttributes attr = UA_VariableAttributes_default;
    UA_Double d = i * 0.5;
    UA_Int32 n = (UA_Int32)i;
    UA_Boolean b = i % 2 == 1;
    UA_Float f = i * 0.25f;
    char text[32];
    snprintf(text, sizeof text, "v%u", i);
    UA_String s = UA_STRING(text);
    switch (i % 5) {
    case 0: UA_Variant_setScalar(&attr.value, &d, &UA_TYPES[UA_TYPES_DOUBLE]); break;
    case 1: UA_Variant_setScalar(&attr.value, &n, &UA_TYPES[UA_TYPES_INT32]); break;
    case 2: UA_Variant_setScalar(&attr.value, &b, &UA_TYPES[UA_TYPES_BOOLEAN]); break;
    case 3: UA_Variant_setScalar(&attr.value, &f, &UA_TYPES[UA_TYPES_FLOAT]); break;
    default: UA_Variant_setScalar(&attr.value, &s, &UA_TYPES[UA_TYPES_STRING]); break;
    }
    attr.dataType = attr.value.type->typeId;
    attr.valueRank = UA_VALUERANK_SCALAR;
    attr.accessLevel = i % 7 == 6 ? UA_ACCESSLEVELMASK_READ : UA_ACCESSLEVELMASK_READ | UA_ACCESSLEVELMASK_WRITE;
    attr.userAccessLevel = attr.accessLevel;
    attr.displayName = UA_LOCALIZEDTEXT("", name);
    UA_Server_addVariableNode(server, UA_NODEID_STRING(ns, name), folder, UA_NS0ID(HASCOMPONENT),
                              UA_QUALIFIEDNAME(ns, name), UA_NS0ID(BASEDATAVARIABLETYPE), attr, NULL, NULL);
}

/* OpenSSL: adds extension `nid` = `value` to `cert`, issued by `issuer`. */
static void add_extension(X509 *cert, X509 *issuer, int nid, const char *value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext) {
        X509_add_ext(cert, ext, -1);
        X509_EXTENSION_free(ext);
    }
}

/* A certificate for `key` named `cn`, valid from `from` to `to` seconds from now, signed by
 * `issuer` (self-signed when NULL); a CA, or an application instance naming `names`. */
static X509 *make_certificate(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, long from, long to,
                              const char *names) {
    static long serial = 1;
    X509 *cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
    X509_gmtime_adj(X509_getm_notBefore(cert), from);
    X509_gmtime_adj(X509_getm_notAfter(cert), to);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name);
    X509 *signer = issuer ? issuer : cert;
    add_extension(cert, signer, NID_subject_key_identifier, "hash");
    add_extension(cert, signer, NID_authority_key_identifier, "keyid:always");
    if (!names) {
        add_extension(cert, signer, NID_basic_constraints, "critical,CA:TRUE");
        add_extension(cert, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_extension(cert, signer, NID_basic_constraints, "critical,CA:FALSE");
        add_extension(cert, signer, NID_key_usage,
                      "critical,digitalSignature,nonRepudiation,keyEncipherment,dataEncipherment");
        add_extension(cert, signer, NID_ext_key_usage, "serverAuth,clientAuth");
        add_extension(cert, signer, NID_subject_alt_name, names);
    }
    X509_sign(cert, issuer_key ? issuer_key : key, EVP_sha256());
    return cert;
}

/* `length` bytes at `data`, which OpenSSL allocated, as a ByteString of open62541's. */
static UA_ByteString owned_bytes(unsigned char *data, int length) {
    UA_ByteString bytes = UA_BYTESTRING_NULL;
    if (length > 0 && UA_ByteString_allocBuffer(&bytes, (size_t)length) == UA_STATUSCODE_GOOD)
        memcpy(bytes.data, data, (size_t)length);
    OPENSSL_free(data);
    return bytes;
}

/* The server's certificate and key for `mode` (see the top). 0 on success. */
static int made_certificate(const char *mode, UA_ByteString *certificate, UA_ByteString *key) {
    const char *names = "DNS:localhost,IP:127.0.0.1,URI:urn:bifrost:open62541";
    EVP_PKEY *server_key = EVP_RSA_gen(2048);
    X509 *cert;
    if (strncmp(mode, "secure-ca:", 10) == 0) {
        EVP_PKEY *ca_key = EVP_RSA_gen(2048);
        X509 *ca = make_certificate(ca_key, "Bifrost Test CA", NULL, NULL, -86400, 86400 * 30, NULL);
        cert = make_certificate(server_key, "open62541@127.0.0.1", ca, ca_key, -86400, 86400 * 30, names);
        unsigned char *der = NULL;
        int length = i2d_X509(ca, &der);
        FILE *out = fopen(mode + 10, "wb");
        if (!out || length <= 0 || fwrite(der, 1, (size_t)length, out) != (size_t)length) return 1;
        fclose(out);
        OPENSSL_free(der);
        X509_free(ca);
        EVP_PKEY_free(ca_key);
    } else if (strcmp(mode, "secure-expired") == 0) {
        cert = make_certificate(server_key, "open62541@127.0.0.1", NULL, NULL, -86400 * 30, -86400, names);
    } else {
        cert = make_certificate(server_key, "open62541@127.0.0.1", NULL, NULL, -86400, 86400 * 30,
                                "DNS:localhost,IP:127.0.0.1,URI:urn:elsewhere");
    }
    unsigned char *der = NULL;
    int length = i2d_X509(cert, &der);
    *certificate = owned_bytes(der, length);
    der = NULL;
    length = i2d_PrivateKey(server_key, &der);
    *key = owned_bytes(der, length);
    X509_free(cert);
    EVP_PKEY_free(server_key);
    return certificate->length == 0 || key->length == 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: open62541_server PORT [VARIABLES [changing] [secure|secure-ca:FILE|secure-expired|secure-wrong-uri]]\n");
        return 2;
    }
    UA_UInt16 port = (UA_UInt16)atoi(argv[1]);
    unsigned count = argc > 2 ? (unsigned)atoi(argv[2]) : 1000;
    signal(SIGINT, stop);
    signal(SIGTERM, stop);

    int changing = 0, secure = 0;
    const char *made = NULL; /* a certificate of OpenSSL's, for the checks' tests */
    for (int i = 3; i < argc; i++) {
        changing |= strcmp(argv[i], "changing") == 0;
        if (strncmp(argv[i], "secure", 6) == 0) {
            secure = 1;
            if (strcmp(argv[i], "secure") != 0) made = argv[i];
        }
    }

    UA_Server *server = UA_Server_new();
    UA_ServerConfig *config = UA_Server_getConfig(server);
    if (secure) {
        UA_String subject[] = {UA_STRING_STATIC("C=DE"), UA_STRING_STATIC("O=Bifrost"),
                               UA_STRING_STATIC("CN=open62541@127.0.0.1")};
        UA_String names[] = {UA_STRING_STATIC("DNS:localhost"), UA_STRING_STATIC("IP:127.0.0.1"),
                             UA_STRING_STATIC("URI:urn:bifrost:open62541")};
        UA_ByteString certificate = UA_BYTESTRING_NULL, key = UA_BYTESTRING_NULL;
        int certified = made ? made_certificate(made, &certificate, &key) == 0
                             : UA_CreateCertificate(UA_Log_Stdout, subject, 3, names, 3, UA_CERTIFICATEFORMAT_DER,
                                                    NULL, &key, &certificate) == UA_STATUSCODE_GOOD;
        if (!certified ||
            UA_ServerConfig_setDefaultWithSecurityPolicies(config, port, &certificate, &key, NULL, 0, NULL, 0,
                                                           NULL, 0) != UA_STATUSCODE_GOOD) {
            fprintf(stderr, "open62541 could not set up its security\n");
            return 1;
        }
        /* The deprecated policies too (SHA-1), which clients use only when asked. */
        const char *deprecated[] = {"http://opcfoundation.org/UA/SecurityPolicy#Basic128Rsa15",
                                    "http://opcfoundation.org/UA/SecurityPolicy#Basic256"};
        if (UA_ServerConfig_addSecurityPolicyBasic128Rsa15(config, &certificate, &key) != UA_STATUSCODE_GOOD ||
            UA_ServerConfig_addSecurityPolicyBasic256(config, &certificate, &key) != UA_STATUSCODE_GOOD) {
            fprintf(stderr, "open62541 could not add the deprecated policies\n");
            return 1;
        }
        for (int i = 0; i < 2; i++) {
            UA_ServerConfig_addEndpoint(config, UA_STRING((char *)deprecated[i]), UA_MESSAGESECURITYMODE_SIGN);
            UA_ServerConfig_addEndpoint(config, UA_STRING((char *)deprecated[i]), UA_MESSAGESECURITYMODE_SIGNANDENCRYPT);
        }
        UA_ByteString_clear(&certificate);
        UA_ByteString_clear(&key);
        UA_String_clear(&config->applicationDescription.applicationUri);
        config->applicationDescription.applicationUri = UA_STRING_ALLOC("urn:bifrost:open62541");
        UA_CertificateGroup_AcceptAll(&config->secureChannelPKI);
        UA_CertificateGroup_AcceptAll(&config->sessionPKI);
        UA_UsernamePasswordLogin logins[] = {{UA_STRING_STATIC("operator"), UA_STRING_STATIC("secret-pw")}};
        config->accessControl.clear(&config->accessControl);
        UA_AccessControl_default(config, true, NULL, 1, logins);
    } else {
        UA_ServerConfig_setMinimal(config, port, NULL);
    }
    /* Loopback only; a secure server also on 127.0.0.2, which its certificate does not name. */
    size_t urls = secure ? 2 : 1;
    char url[64];
    UA_Array_delete(config->serverUrls, config->serverUrlsSize, &UA_TYPES[UA_TYPES_STRING]);
    config->serverUrls = (UA_String *)UA_Array_new(urls, &UA_TYPES[UA_TYPES_STRING]);
    for (size_t i = 0; i < urls; i++) {
        snprintf(url, sizeof url, "opc.tcp://127.0.0.%u:%u", (unsigned)i + 1, port);
        config->serverUrls[i] = UA_String_fromChars(url);
    }
    config->serverUrlsSize = urls;

    UA_UInt16 ns = UA_Server_addNamespace(server, "urn:bifrost:simulator");
    UA_ObjectAttributes folder_attr = UA_ObjectAttributes_default;
    folder_attr.displayName = UA_LOCALIZEDTEXT("", "Simulation");
    UA_NodeId folder = UA_NODEID_STRING(ns, "Simulation");
    UA_Server_addObjectNode(server, folder, UA_NS0ID(OBJECTSFOLDER), UA_NS0ID(ORGANIZES),
                            UA_QUALIFIEDNAME(ns, "Simulation"), UA_NS0ID(FOLDERTYPE), folder_attr, NULL, NULL);
    for (unsigned i = 0; i < count; i++) add_variable(server, ns, folder, i);
    if (changing) {
        variable_count = count;
        variable_ns = ns;
        started = time(NULL);
        UA_Server_addRepeatedCallback(server, change, NULL, 1000, NULL);
    }

    if (UA_Server_run_startup(server) != UA_STATUSCODE_GOOD) {
        fprintf(stderr, "open62541 could not listen on %s\n", url);
        return 1;
    }
    printf("listening %u\n", port);
    fflush(stdout);
    while (running) UA_Server_run_iterate(server, true);
    UA_Server_run_shutdown(server);
    UA_Server_delete(server);
    return 0;
}
