//! The authorization matrix: every endpoint of the route table, called by every kind of
//! caller (see `world::Caller`), gets exactly the status PROTOCOL.md gives (Signal's server
//! where it is silent), over HTTP and again through the WebSocket tunnel, and no answer ever
//! carries another account's data. One row per endpoint, one column per caller: a gap in
//! the table is a gap in the checks.

mod requests;
mod world;

use std::time::Duration;

use crate::common::{Backend, TestApp, TestStores};
use requests::{Endpoint, Target, check_body, request, send_http, send_tunnel, upgrade};
use world::{CALLERS, Sockets, World};

use Endpoint::*;
use Target::{Alice, Unknown};

/// Columns: nobody, garbage `Authorization`, wrong password, unknown account, Alice's access
/// key, a wrong access key, Bob (another account), Alice's linked device 2, Alice's primary,
/// Alice's primary plus her access key. Cells run left to right, row by row, so a row may
/// depend on the cells before it (noted where it does).
#[rustfmt::skip]
const MATRIX: &[(Endpoint, [u16; 10])] = &[
    //                                   nobody garbage wrong unknown keyOk keyBad other linked primary both
    // No authentication at all (PROTOCOL 6).
    (Keepalive,                             [200, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
    // Only the Basic password is read; it becomes the new account's (PROTOCOL 3).
    (Register,                              [401, 401, 200, 200, 401, 401, 200, 200, 200, 200]),
    // The calling device's own account; an access key is no credential here.
    (WhoAmI,                                [401, 401, 401, 401, 401, 401, 200, 200, 200, 200]),
    (SetAttributes("/v1/accounts/attributes/"), [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    (SetAttributes("/v1/accounts/attributes"),  [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    (ListDevices,                           [401, 401, 401, 401, 401, 401, 200, 200, 200, 200]),
    // Link codes are for primaries only (PROTOCOL 8).
    (LinkCode,                              [401, 401, 401, 401, 401, 401, 200, 403, 200, 200]),
    // A Basic header is needed (its password is the new device's); the code is wrong.
    (LinkWithBadCode,                       [401, 401, 403, 403, 401, 401, 403, 403, 403, 403]),
    // Authenticated, but no socket waits at the address.
    (Provision,                             [401, 401, 401, 401, 401, 401, 404, 404, 404, 404]),
    (KeyCounts,                             [401, 401, 401, 401, 401, 401, 200, 200, 200, 200]),
    // Keys signed by Alice's identity: Bob's account rejects the signatures (422).
    (UploadKeys,                            [401, 401, 401, 401, 401, 401, 422, 204, 204, 204]),
    // The digest of Alice's primary: only that device's keys match; others get 409.
    (CheckKeys,                             [401, 401, 401, 401, 401, 401, 409, 409, 200, 200]),
    (Certificate,                           [401, 401, 401, 401, 401, 401, 200, 200, 200, 200]),
    // Basic auth or the target's access key; both at once is a 400 (PROTOCOL 4, 7).
    (FetchKeys(Alice, "*"),                 [401, 401, 401, 401, 200, 401, 200, 200, 200, 400]),
    (FetchKeys(Alice, "9"),                 [401, 401, 401, 401, 404, 401, 404, 404, 404, 400]),
    // An unknown target: 404 when identified, 401 when anonymous.
    (FetchKeys(Unknown, "*"),               [401, 401, 401, 401, 401, 401, 404, 404, 404, 400]),
    (Profile(Alice),                        [401, 401, 401, 401, 200, 401, 200, 200, 200, 400]),
    (Profile(Unknown),                      [401, 401, 401, 401, 401, 401, 404, 404, 404, 400]),
    // Versioned profiles (PROTOCOL 13): the caller's own, by device; reads as above.
    (SetProfile,                            [401, 401, 401, 401, 401, 401, 200, 200, 200, 200]),
    (VersionedProfile(Alice),               [401, 401, 401, 401, 200, 401, 200, 200, 200, 400]),
    (VersionedProfile(Unknown),             [401, 401, 401, 401, 401, 401, 404, 404, 404, 400]),
    (CredentialProfile(Alice),              [401, 401, 401, 401, 200, 401, 200, 200, 200, 400]),
    (CredentialProfile(Unknown),            [401, 401, 401, 401, 401, 401, 404, 404, 404, 400]),
    // No group send endorsements are checked: the token is refused (sealpost, 13.4).
    (ProfileWithGroupSendToken,             [401, 401, 401, 401, 401, 401, 401, 401, 401, 400]),
    // Avatars are public (their bytes are encrypted); no such avatar, 404.
    (AvatarDownload,                        [404, 404, 404, 404, 404, 404, 404, 404, 404, 404]),
    // The form authorizes an upload, never account credentials: none is read (400, no form).
    (AvatarUpload,                          [400, 400, 400, 400, 400, 400, 400, 400, 400, 400]),
    // Alice's own devices send sync messages (leaving themselves out).
    (SendMessage(Alice),                    [401, 401, 401, 401, 200, 401, 200, 200, 200, 400]),
    (SendMessage(Unknown),                  [401, 401, 401, 401, 401, 401, 404, 404, 404, 400]),
    // Sealed only: the access key authorizes, `Authorization` is ignored; no key is a 401
    // before any recipient is looked up (as in Signal); an unknown recipient is a 404.
    (SendMulti(Alice),                      [401, 401, 401, 401, 200, 401, 401, 401, 401, 200]),
    (SendMulti(Unknown),                    [401, 401, 401, 401, 404, 404, 401, 401, 401, 404]),
    // Wrong credentials are refused before the upgrade (403); none opens an anonymous socket.
    (WebSocket("/v1/websocket/"),           [101, 403, 403, 403, 101, 101, 101, 101, 101, 101]),
    (WebSocket("/v1/websocket"),            [101, 403, 403, 403, 101, 101, 101, 101, 101, 101]),
    (ProvisioningSocket("/v1/websocket/provisioning/"), [101, 101, 101, 101, 101, 101, 101, 101, 101, 101]),
    (ProvisioningSocket("/v1/websocket/provisioning"),  [101, 101, 101, 101, 101, 101, 101, 101, 101, 101]),
    // Push registrations: the calling device's own (PROTOCOL 11.1, 11.2); an access key is
    // no credential here.
    (SetGcm,                                [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    (DeleteGcm,                             [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    (SetApn,                                [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    (DeleteApn,                             [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    (SetWebPush,                            [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    (ActivateWebPush,                       [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    (DeleteWebPush,                         [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    // An upload form: the calling device's own account (PROTOCOL 12.1).
    (UploadForm,                            [401, 401, 401, 401, 401, 401, 200, 200, 200, 200]),
    // Downloads need no credentials and ignore any (PROTOCOL 12.3): no such key, 404.
    (Download("GET"),                       [404, 404, 404, 404, 404, 404, 404, 404, 404, 404]),
    (Download("HEAD"),                      [404, 404, 404, 404, 404, 404, 404, 404, 404, 404]),
    // The VAPID key is public: no credentials needed, none refused (sealpost, 11.8).
    // The TUS endpoint (PROTOCOL 12.3): the form's Bearer token authorizes, never account
    // credentials or an access key; OPTIONS needs nothing.
    (TusOptions,                            [204, 204, 204, 204, 204, 204, 204, 204, 204, 204]),
    (TusCreate,                             [401, 401, 401, 401, 401, 401, 401, 401, 401, 401]),
    (TusHead,                               [401, 401, 401, 401, 401, 401, 401, 401, 401, 401]),
    (TusPatch,                              [401, 401, 401, 401, 401, 401, 401, 401, 401, 401]),
    (VapidKey,                              [200, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
    // Section 16. The provisioning keepalive needs nothing (16.3).
    (KeepaliveProvisioning,                 [200, 200, 200, 200, 200, 200, 200, 200, 200, 200]),
    // Anonymous only: any `Authorization` (even a wrong one) or an authenticated socket is
    // a 400; an access key is no credential here (16.3).
    (AccountExists(Alice),                  [200, 400, 400, 400, 200, 200, 400, 400, 400, 400]),
    (AccountExists(Unknown),                [404, 400, 400, 400, 404, 404, 400, 400, 400, 400]),
    // A device renames itself; with `deviceId` only the primary renames others (16.2).
    (RenameDevice(""),                      [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    (RenameDevice("?deviceId=1"),           [401, 401, 401, 401, 401, 401, 204, 403, 204, 204]),
    // Any device of an account may wait; nobody used this code, so the wait ends (204).
    (WaitForLinkedDevice,                   [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    // Usernames (PROTOCOL 14.1): each account its own hash; the lookups must be anonymous
    // (400 for any Authorization header or authenticated socket; an access key is no
    // authentication). Confirming again is idempotent; deleting comes last, and the
    // tunnel's pass reserves the held hash back (it is the account's own).
    (ReserveUsername,                       [401, 401, 401, 401, 401, 401, 200, 200, 200, 200]),
    (ConfirmUsername,                       [401, 401, 401, 401, 401, 401, 200, 200, 200, 200]),
    (LookupUsername(Alice),                 [200, 400, 400, 400, 200, 200, 400, 400, 400, 400]),
    (LookupUsername(Unknown),               [404, 400, 400, 400, 404, 404, 400, 400, 400, 400]),
    (SetUsernameLink,                       [401, 401, 401, 401, 401, 401, 200, 200, 200, 200]),
    (LookupUsernameLink,                    [404, 400, 400, 400, 404, 404, 400, 400, 400, 400]),
    (DeleteUsernameLink,                    [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    (DeleteUsername,                        [401, 401, 401, 401, 401, 401, 204, 204, 204, 204]),
    // Relay credentials are for devices only (PROTOCOL 15.2).
    (CallingRelays,                         [401, 401, 401, 401, 401, 401, 200, 200, 200, 200]),
    // Any device may report; the answer is 202 whether or not the report counts.
    (ReportSpam,                            [401, 401, 401, 401, 401, 401, 202, 202, 202, 202]),
    // Destructive rows last. Bob has no device 3 (404); a linked device may only remove
    // itself (403); the primary removes 3 (204), after which it is gone (404).
    (RemoveDevice(3),                       [401, 401, 401, 401, 401, 401, 404, 403, 204, 404]),
    // Each caller removes its own device: the primary never (403), the linked one may (204).
    (RemoveOwnDevice,                       [401, 401, 401, 401, 401, 401, 403, 204, 403, 403]),
    // Bob deletes his account, Alice's removed device no longer authenticates, Alice's
    // primary deletes hers, and then its credentials are dead too.
    (DeleteAccount,                         [401, 401, 401, 401, 401, 401, 204, 401, 204, 401]),
];

/// Rows that also run through the tunnel: not the socket upgrades (a socket cannot be
/// opened through a socket) and not the destructive ones (they close the sockets).
fn tunnelled(endpoint: Endpoint) -> bool {
    !matches!(
        endpoint,
        WebSocket(_) | ProvisioningSocket(_) | RemoveDevice(_) | RemoveOwnDevice | DeleteAccount
    )
}

async fn start(backend: Backend) -> (TestApp, TestStores) {
    let stores = TestStores::new(backend).await;
    let mut config = stores.config();
    // Dozens of wrong passwords from one address would hit `authFailures`: rate limits
    // have their own tests (tests/api/rate_limits.rs); this one is about who may do what.
    config.rate_limits.enabled = false;
    // The WebPush row subscribes to a closed local port: its activation push is refused at
    // once instead of leaving the machine.
    config.webpush_allow_private = true;
    (TestApp::start(config).await, stores)
}

async fn every_endpoint_answers_every_caller_as_the_contract_says(backend: Backend) {
    let (app, _stores) = start(backend).await;
    let world = World::build(&app).await;
    let mut failures = Vec::new();

    // Over HTTP, the non-destructive rows.
    for (endpoint, expected) in MATRIX.iter().filter(|(e, _)| tunnelled(*e)) {
        for (caller, want) in CALLERS.iter().zip(expected) {
            let (status, body) =
                send_http(&app, &request(&world, *endpoint, *caller), &world, *caller).await;
            check_body(&world, *endpoint, *caller, status, &body);
            if status != *want {
                failures.push(format!(
                    "HTTP   {endpoint:?} as {caller:?}: {status}, want {want}"
                ));
            }
        }
    }
    // The socket upgrades.
    for (endpoint, expected) in MATRIX
        .iter()
        .filter(|(e, _)| matches!(e, WebSocket(_) | ProvisioningSocket(_)))
    {
        for (caller, want) in CALLERS.iter().zip(expected) {
            let status = upgrade(&app, *endpoint, &world, *caller).await;
            if status != *want {
                failures.push(format!(
                    "UPGRADE {endpoint:?} as {caller:?}: {status}, want {want}"
                ));
            }
        }
    }

    // The same rows through the tunnel: same handlers, same statuses.
    let mut sockets = Sockets::open(&app, &world).await;
    for (endpoint, expected) in MATRIX.iter().filter(|(e, _)| tunnelled(*e)) {
        for (caller, want) in CALLERS.iter().zip(expected) {
            let (status, body) = send_tunnel(
                sockets.of(*caller),
                &request(&world, *endpoint, *caller),
                &world,
                *caller,
            )
            .await;
            check_body(&world, *endpoint, *caller, status, &body);
            if status != *want {
                failures.push(format!(
                    "TUNNEL {endpoint:?} as {caller:?}: {status}, want {want}"
                ));
            }
        }
    }
    messages_reached_only_their_addressee(&world, &mut sockets).await;

    // The destructive rows, over HTTP.
    for (endpoint, expected) in MATRIX.iter().filter(|(e, _)| !tunnelled(*e)) {
        if matches!(endpoint, WebSocket(_) | ProvisioningSocket(_)) {
            continue;
        }
        for (caller, want) in CALLERS.iter().zip(expected) {
            let (status, body) =
                send_http(&app, &request(&world, *endpoint, *caller), &world, *caller).await;
            check_body(&world, *endpoint, *caller, status, &body);
            if status != *want {
                failures.push(format!(
                    "HTTP   {endpoint:?} as {caller:?}: {status}, want {want}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells differ from the contract:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Bob's socket got no envelope (nobody wrote to him); every envelope Alice's primary got
/// was addressed to Alice.
async fn messages_reached_only_their_addressee(world: &World, sockets: &mut Sockets) {
    let mut alice_envelopes = 0;
    while let Some(request) = sockets
        .alice_primary
        .next_request(Duration::from_millis(500))
        .await
    {
        if let Some(envelope) = request.envelope() {
            assert_eq!(
                envelope.destination_service_id.as_deref(),
                Some(&world.alice.aci().as_bytes()[..]),
                "an envelope for someone else reached Alice"
            );
            alice_envelopes += 1;
        }
    }
    assert!(alice_envelopes > 0, "Alice's primary received her messages");
    while let Some(request) = sockets.bob.next_request(Duration::from_millis(300)).await {
        assert!(
            request.envelope().is_none(),
            "Bob received an envelope although nobody wrote to him"
        );
    }
}

/// Inside the tunnel an `Authorization` header never switches the account: Bob's socket
/// carrying Alice's credentials still acts as Bob.
async fn a_tunnelled_authorization_header_never_switches_the_account(backend: Backend) {
    let (app, _stores) = start(backend).await;
    let world = World::build(&app).await;
    let sockets = Sockets::open(&app, &world).await;
    let alice_auth = format!("authorization:{}", world.alice.device(1).authorization());
    let whoami = sockets
        .bob
        .request("GET", "/v1/accounts/whoami", None, vec![alice_auth.clone()])
        .await
        .expect("an answer");
    assert_eq!(whoami.status, 200);
    let json: serde_json::Value = whoami.json().expect("JSON");
    assert_eq!(json["uuid"], world.bob.aci().to_string());
    // On an anonymous socket the header does not authenticate either.
    let anonymous = sockets
        .anonymous
        .request("GET", "/v1/accounts/whoami", None, vec![alice_auth])
        .await
        .expect("an answer");
    assert_eq!(anonymous.status, 401);
}

on_both_backends!(
    every_endpoint_answers_every_caller_as_the_contract_says,
    a_tunnelled_authorization_header_never_switches_the_account,
);
