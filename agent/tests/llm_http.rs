//! LLM providers and the LLM proposer against a real scripted HTTP server on 127.0.0.1.

use std::time::{Duration, Instant};

use agentloop::llm::{
    Api, ApiKey, ChatMessage, ClientSettings, ErrorClass, LlmClient, LlmError, Pricing,
    RetryPolicy, Role,
};
use agentloop::patch::{self, PatchFormat};
use agentloop::prompts::template_sha256;
use agentloop::proposer::{
    from_config_with_env, AgentConfig, ConfigError, OfflineSpace, ProposalContext, ProposeError,
    Proposer, ProviderKind, Request,
};
use agentloop::testing::{CannedReply, ScriptedServer};

const KEY: &str = "sk-test-SECRET-0123456789abcdefghij";
const CONFIG: &str = "[optim]\nlr = 0.002\n";

const GOOD_REPLY: &str = "DESCRIPTION: raise the learning rate to 0.004\n\
RATIONALE: the loss is still falling steeply when the budget ends.\n\n\
trainer/config/default.toml\n```toml\n<<<<<<< SEARCH\nlr = 0.002\n=======\nlr = 0.004\n>>>>>>> REPLACE\n```\n";

fn settings(api: Api, server: &ScriptedServer) -> ClientSettings {
    ClientSettings {
        api,
        base_url: match api {
            Api::OpenAi => server.openai_base_url(),
            Api::Anthropic => server.url(),
        },
        model: "test-model".into(),
        api_key: Some(ApiKey::new(KEY)),
        timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(5),
        },
        pricing: Pricing {
            prompt_per_mtok: 2.0,
            completion_per_mtok: 8.0,
        },
        max_tokens: None,
        temperature: None,
    }
}

fn ok_reply(api: Api, text: &str, prompt: u64, completion: u64) -> CannedReply {
    match api {
        Api::OpenAi => CannedReply::openai_chat(text, prompt, completion),
        Api::Anthropic => CannedReply::anthropic_message(text, prompt, completion),
    }
}

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "be brief"),
        ChatMessage::new(Role::User, "hello"),
    ]
}

fn context() -> ProposalContext {
    ProposalContext {
        editable_files: vec![("trainer/config/default.toml".into(), CONFIG.into())],
        history: vec![],
        noise_floor: Some(0.002),
        min_gain: None,
        budget_left: Duration::from_secs(3600),
        metric: "val_bpb".into(),
        request: Request::New,
        notice: None,
    }
}

fn agent_config(provider: ProviderKind, base_url: Option<String>) -> AgentConfig {
    AgentConfig {
        provider,
        base_url,
        model: Some("test-model".into()),
        api_key_env: Some("AGENTLOOP_TEST_KEY".into()),
        retry_base_delay: Duration::from_millis(10),
        price_prompt_per_mtok: 2.0,
        price_completion_per_mtok: 8.0,
        ..AgentConfig::default()
    }
}

fn with_key(name: &str) -> Option<String> {
    (name == "AGENTLOOP_TEST_KEY").then(|| KEY.to_string())
}

#[tokio::test]
async fn openai_reply_becomes_a_proposal_with_usage_and_cost() {
    let server = ScriptedServer::start([CannedReply::openai_chat(GOOD_REPLY, 1200, 300)]).unwrap();
    let cfg = agent_config(ProviderKind::OpenAi, Some(server.openai_base_url()));
    let mut proposer = from_config_with_env(&cfg, None, &with_key).unwrap();
    assert_eq!(proposer.provider(), "openai");
    assert!(!proposer.is_offline());

    let p = proposer.propose(&context()).await.unwrap();
    assert_eq!(p.description, "raise the learning rate to 0.004");
    assert_eq!(
        p.rationale,
        "the loss is still falling steeply when the budget ends."
    );
    assert_eq!(p.patch_format, PatchFormat::SearchReplace);
    assert_eq!((p.prompt_tokens, p.completion_tokens), (1200, 300));
    assert!((p.cost_usd - (1200.0 * 2.0 + 300.0 * 8.0) / 1e6).abs() < 1e-12);
    assert_eq!(p.provider, "openai");
    assert_eq!(p.model, "scripted-model");
    assert_eq!(p.prompt_template_sha256, template_sha256());
    assert_eq!(p.reply_text, GOOD_REPLY);
    let edits = patch::apply(&p.patch, &|path| {
        (path == "trainer/config/default.toml").then(|| CONFIG.to_string())
    })
    .unwrap();
    assert_eq!(edits[0].after.as_deref(), Some("[optim]\nlr = 0.004\n"));

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let body = r.json();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["role"], "user");
    let prompt = body["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("### trainer/config/default.toml") && prompt.contains("lr = 0.002"));
}

#[tokio::test]
async fn anthropic_request_shape_and_usage() {
    let server =
        ScriptedServer::start([CannedReply::anthropic_message(GOOD_REPLY, 900, 100)]).unwrap();
    let cfg = agent_config(ProviderKind::Anthropic, Some(server.url()));
    let mut proposer = from_config_with_env(&cfg, None, &with_key).unwrap();
    let p = proposer.propose(&context()).await.unwrap();
    assert_eq!(p.provider, "anthropic");
    assert_eq!(p.model, "scripted-claude");
    assert_eq!((p.prompt_tokens, p.completion_tokens), (900, 100));
    assert!((p.cost_usd - (900.0 * 2.0 + 100.0 * 8.0) / 1e6).abs() < 1e-12);

    let r = &server.requests()[0];
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key"), Some(KEY));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.header("authorization"), None);
    let body = r.json();
    assert!(body["system"].as_str().unwrap().contains("agentloop"));
    assert_eq!(body["max_tokens"], 8192);
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["user"], "the system prompt is not a message");
}

#[tokio::test]
async fn rate_limit_honours_retry_after_then_succeeds() {
    for api in [Api::OpenAi, Api::Anthropic] {
        let server = ScriptedServer::start([
            CannedReply::error(429, "rate limited").with_header("retry-after", "1"),
            ok_reply(api, "fine", 10, 2),
        ])
        .unwrap();
        let client = LlmClient::new(settings(api, &server)).unwrap();
        let started = Instant::now();
        let c = client.complete(&conversation()).await.unwrap();
        // The backoff alone would be under 50 ms; only Retry-After explains a 1 s wait.
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{api:?}: {:?}",
            started.elapsed()
        );
        assert_eq!(c.text, "fine");
        assert_eq!(c.attempts, 2);
        assert_eq!(c.usage.prompt_tokens, 10);
        assert_eq!(server.requests().len(), 2);
    }
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_until_success() {
    for api in [Api::OpenAi, Api::Anthropic] {
        let server = ScriptedServer::start([
            CannedReply::error(500, "boom"),
            CannedReply::error(503, "overloaded"),
            ok_reply(api, "third time lucky", 5, 5),
        ])
        .unwrap();
        let client = LlmClient::new(settings(api, &server)).unwrap();
        let c = client.complete(&conversation()).await.unwrap();
        assert_eq!(
            (c.text.as_str(), c.attempts),
            ("third time lucky", 3),
            "{api:?}"
        );
        assert_eq!(server.requests().len(), 3);
    }
}

#[tokio::test]
async fn server_errors_give_up_after_max_retries_with_the_last_message() {
    let server =
        ScriptedServer::start((0..5).map(|_| CannedReply::error(502, "bad gateway"))).unwrap();
    let mut s = settings(Api::OpenAi, &server);
    s.retry.max_retries = 2;
    let err = LlmClient::new(s)
        .unwrap()
        .complete(&conversation())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::GaveUp {
                status: 502,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "openai failed with HTTP 502 on all 3 attempts: bad gateway"
    );
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_never_shows_the_key() {
    for api in [Api::OpenAi, Api::Anthropic] {
        let server = ScriptedServer::start([
            CannedReply::echo_request_headers(401),
            ok_reply(api, "unused", 1, 1),
        ])
        .unwrap();
        let client = LlmClient::new(settings(api, &server)).unwrap();
        let err = client.complete(&conversation()).await.unwrap_err();
        let shown = format!("{err} / {err:?} / {client:?}");
        assert!(
            !shown.contains("0123456789abcdef"),
            "{api:?} leaked the key: {shown}"
        );
        assert!(
            !shown.contains("SECRET"),
            "{api:?} leaked part of the key: {shown}"
        );
        assert_eq!(err.status(), Some(401));
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "{} rejected the request with HTTP 401: invalid credentials",
                api.name()
            )),
            "{msg}"
        );
        // The server did echo the key: the redaction is what kept it out.
        let raw = server.requests()[0]
            .headers
            .iter()
            .any(|(_, v)| v.contains(KEY));
        assert!(raw);
        assert_eq!(server.requests().len(), 1, "a 401 is not retried");
    }
}

#[tokio::test]
async fn other_client_errors_name_status_and_provider_message() {
    let server =
        ScriptedServer::start([CannedReply::error(404, "model `test-model` does not exist")])
            .unwrap();
    let err = LlmClient::new(settings(Api::OpenAi, &server))
        .unwrap()
        .complete(&conversation())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "openai rejected the request with HTTP 404: model `test-model` does not exist"
    );
}

#[tokio::test]
async fn hung_server_hits_the_timeout_on_every_attempt() {
    for api in [Api::OpenAi, Api::Anthropic] {
        let server = ScriptedServer::start([CannedReply::hang(), CannedReply::hang()]).unwrap();
        let mut s = settings(api, &server);
        s.timeout = Duration::from_millis(300);
        s.retry.max_retries = 1;
        let err = LlmClient::new(s)
            .unwrap()
            .complete(&conversation())
            .await
            .unwrap_err();
        assert!(
            matches!(err, LlmError::Timeout { attempts: 2, .. }),
            "{api:?}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{} did not answer within 300ms on all 2 attempts",
                api.name()
            )
        );
        assert_eq!(server.requests().len(), 2);
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transport_error() {
    let server = ScriptedServer::start([]).unwrap();
    let mut s = settings(Api::OpenAi, &server);
    drop(server); // nothing listens on that port any more
    s.retry.max_retries = 1;
    let err = LlmClient::new(s)
        .unwrap()
        .complete(&conversation())
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Transport { attempts: 2, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn unusable_reply_keeps_its_usage_for_the_ledger() {
    let server = ScriptedServer::start([CannedReply::openai_chat(
        "I think the learning rate is fine.",
        700,
        40,
    )])
    .unwrap();
    let cfg = agent_config(ProviderKind::OpenAi, Some(server.openai_base_url()));
    let mut proposer = from_config_with_env(&cfg, None, &with_key).unwrap();
    let err = proposer.propose(&context()).await.unwrap_err();
    let ProposeError::BadReply(bad) = &err else {
        panic!("expected BadReply, got {err:?}");
    };
    let (error, reply_text, usage) = (&bad.error, &bad.reply_text, &bad.usage);
    assert_eq!(*error, patch::ParseError::NoPatch);
    assert_eq!(reply_text, "I think the learning rate is fine.");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (700, 40));
    assert_eq!(err.usage().prompt_tokens, 700);
}

#[tokio::test]
async fn retry_request_sends_the_previous_reply_and_reason() {
    let server = ScriptedServer::start([CannedReply::openai_chat(GOOD_REPLY, 1, 1)]).unwrap();
    let cfg = agent_config(ProviderKind::OpenAi, Some(server.openai_base_url()));
    let mut proposer = from_config_with_env(&cfg, None, &with_key).unwrap();
    let mut ctx = context();
    ctx.request = Request::Retry {
        previous_reply: "OLD REPLY".into(),
        reason: "SEARCH block 1 for trainer/config/default.toml matched 0 times".into(),
    };
    proposer.propose(&ctx).await.unwrap();
    let body = server.requests()[0].json();
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[2]["role"], "assistant");
    assert_eq!(msgs[2]["content"], "OLD REPLY");
    assert!(msgs[3]["content"]
        .as_str()
        .unwrap()
        .contains("matched 0 times"));
}

#[test]
fn without_key_or_base_url_the_offline_proposer_is_chosen() {
    let space = OfflineSpace::from_agentloop_toml(
        "[proposer.offline]\nfile = \"c.toml\"\n[[proposer.offline.space]]\nkey = \"optim.lr\"\nvalues = [0.001, 0.002]\n",
    )
    .unwrap();
    let cfg = agent_config(ProviderKind::OpenAi, None);
    let p = from_config_with_env(&cfg, space.clone(), &|_| None).unwrap();
    assert!(p.is_offline());
    assert!(
        p.reason().contains("AGENTLOOP_TEST_KEY is not set"),
        "{}",
        p.reason()
    );

    // A local server with no key is used as configured.
    let local = agent_config(ProviderKind::OpenAi, Some("http://127.0.0.1:9/v1".into()));
    let p = from_config_with_env(&local, space.clone(), &|_| None).unwrap();
    assert_eq!(p.provider(), "openai");

    // With the key set, the LLM is used.
    let p = from_config_with_env(&cfg, space, &with_key).unwrap();
    assert_eq!((p.provider(), p.model()), ("openai", "test-model"));
    assert!(!p.reason().contains(KEY));

    // Falling back without a search space is an error that says both things.
    let err = from_config_with_env(&cfg, None, &|_| None).unwrap_err();
    assert!(matches!(err, ConfigError::NoOfflineSpace { .. }));
    assert!(
        err.to_string().contains("[proposer.offline]")
            && err.to_string().contains("AGENTLOOP_TEST_KEY")
    );

    let mut no_model = agent_config(ProviderKind::Anthropic, None);
    no_model.model = None;
    let err = from_config_with_env(&no_model, None, &with_key).unwrap_err();
    assert_eq!(
        err.to_string(),
        "[agent] provider = \"anthropic\" needs `model` (e.g. --model)"
    );
}

#[test]
fn agent_table_parses_with_durations_and_rejects_unknown_fields() {
    let cfg = AgentConfig::from_toml(
        "[agent]\nprovider = \"anthropic\"\nmodel = \"claude-x\"\ntimeout = \"90s\"\nmax_retries = 2\n\
         price_prompt_per_mtok = 3.0\nprice_completion_per_mtok = 15.0\n",
    )
    .unwrap();
    assert_eq!(cfg.provider, ProviderKind::Anthropic);
    assert_eq!(cfg.timeout, Duration::from_secs(90));
    assert_eq!(cfg.max_retries, 2);
    assert_eq!(cfg.key_env().as_deref(), Some("ANTHROPIC_API_KEY"));
    assert_eq!(AgentConfig::from_toml("").unwrap(), AgentConfig::default());
    let err = AgentConfig::from_toml("[agent]\napi_key = \"sk-oops\"\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `api_key`"), "{err}");
    let err = AgentConfig::from_toml("[agent]\ntimeout = \"soon\"\n").unwrap_err();
    assert!(
        err.to_string().contains("`soon` is not a duration"),
        "{err}"
    );
    assert_eq!(
        "Anthropic".parse::<ProviderKind>().unwrap(),
        ProviderKind::Anthropic
    );
    assert!("gemini".parse::<ProviderKind>().is_err());
}

fn raw_200(body: &str) -> CannedReply {
    CannedReply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into(),
        delay: Duration::ZERO,
        echo_request_headers: false,
    }
}

/// What a caller (the loop) must do with each failure: wait on a provider in trouble, stop
/// and name the setting when asking again cannot help.
#[tokio::test]
async fn failures_are_classified_transient_or_fatal_with_the_setting_to_fix() {
    let transient = [
        (CannedReply::error(503, "overloaded"), "HTTP 503"),
        (
            CannedReply::error(429, "slow down").with_header("retry-after", "2"),
            "HTTP 429",
        ),
        (raw_200(""), "body is not JSON"),
        (raw_200(r#"{"choices":[{"mess"#), "body is not JSON"),
        (
            raw_200(r#"{"choices":[{"message":{"content":"\ud800"}}]}"#),
            "hex escape",
        ),
        (raw_200(r#"{"id":"x","model":"m"}"#), "no `choices[0]`"),
        (
            raw_200(r#"{"choices":[{"message":{"content":null},"finish_reason":"length"}]}"#),
            "[agent] max_tokens",
        ),
    ];
    for (reply, says) in transient {
        // Every attempt gets the same answer.
        let server = ScriptedServer::start(vec![reply; 2]).unwrap();
        let mut s = settings(Api::OpenAi, &server);
        s.retry.max_retries = 1;
        let err = LlmClient::new(s)
            .unwrap()
            .complete(&conversation())
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient, "{err}");
        assert!(err.to_string().contains(says), "{err}");
        assert_eq!(err.setting_to_fix(), None);
    }
    let server = ScriptedServer::start(vec![
        CannedReply::error(429, "slow down")
            .with_header("retry-after", "2");
        2
    ])
    .unwrap();
    let mut s = settings(Api::OpenAi, &server);
    s.retry.max_retries = 0;
    let err = LlmClient::new(s)
        .unwrap()
        .complete(&conversation())
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));

    let fatal = [
        (401, "`[agent] api_key_env`"),
        (403, "`[agent] api_key_env`"),
        (404, "`[agent] model`"),
        (400, "`[agent] model`"),
    ];
    for (status, setting) in fatal {
        let server = ScriptedServer::start([CannedReply::error(status, "no")]).unwrap();
        let err = LlmClient::new(settings(Api::OpenAi, &server))
            .unwrap()
            .complete(&conversation())
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Fatal, "{err}");
        assert!(err.setting_to_fix().unwrap().contains(setting), "{status}");
        assert_eq!(server.requests().len(), 1, "HTTP {status} is not retried");
    }
}
