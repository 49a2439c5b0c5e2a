//! deploy/template.yaml against the code. Its connections table must be the
//! one `gitgazer-ws table create` makes (keys, attribute types, the GSI's
//! name, key and projection, billing, the TTL attribute), and the function's
//! environment must name that GSI. Then the table resource is deployed by
//! moto's CloudFormation server (which creates DynamoDB tables from
//! templates, not Lambda functions or the SAM transform) and the real binary,
//! with the function's environment from the template, takes a CONNECT and a
//! DISCONNECT on it; once more with GitGazer's variable names and the
//! table's ARN.
//!
//! moto's server comes from scripts/python-tools (scripts/test puts it on
//! PATH); without it the test fails, naming the script.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::TimeToLiveStatus;
use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer};
use gitgazer_ws_tests::{binary_path, dynamodb_env, test_cache_dir, unix_now};
use serde_json::{Map, Value, json};

use crate::support::{client, keys, scan};

/// The region of `support::client` and `dynamodb_env` (moto keeps tables
/// per region).
const REGION: &str = "us-east-1";
const POOL: &str = "us-east-1_Template1";
const CLIENT: &str = "template-client";

fn template_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/template.yaml")
}

/// The template as JSON, its short-form intrinsic functions in their long
/// form: `!Ref X` → `{"Ref": "X"}`, `!GetAtt A.B` → `{"Fn::GetAtt": ["A",
/// "B"]}`, `!Sub`, `!If`, … → `{"Fn::Sub": …}`.
pub fn template() -> Value {
    let text = std::fs::read_to_string(template_path()).expect("reading deploy/template.yaml");
    let yaml: serde_norway::Value =
        serde_norway::from_str(&text).expect("deploy/template.yaml is YAML");
    to_json(yaml)
}

fn to_json(yaml: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else {
                json!(n.as_f64().expect("a number"))
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(mapping) => Value::Object(
            mapping
                .into_iter()
                .map(|(k, v)| {
                    let key = k.as_str().expect("string keys in the template").to_owned();
                    (key, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let value = to_json(tagged.value);
            match name {
                "Ref" => json!({ "Ref": value }),
                "GetAtt" => {
                    let value = match value {
                        Value::String(path) => {
                            let (resource, attribute) =
                                path.split_once('.').expect("!GetAtt Resource.Attribute");
                            json!([resource, attribute])
                        }
                        other => other,
                    };
                    json!({ "Fn::GetAtt": value })
                }
                "Condition" => json!({ "Condition": value }),
                _ => json!({ format!("Fn::{name}"): value }),
            }
        }
    }
}

/// The key schema, attribute definitions, GSIs and billing mode of a
/// DescribeTable answer, in a comparable form.
async fn table_shape(endpoint: &str, table: &str) -> Value {
    let description = client(endpoint)
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeTable {table}: {e:?}"))
        .table
        .expect("a table description");
    let key_schema = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| {
        schema
            .iter()
            .map(|k| json!([k.attribute_name(), k.key_type().as_str()]))
            .collect::<Vec<_>>()
    };
    let mut attributes: Vec<Value> = description
        .attribute_definitions()
        .iter()
        .map(|a| json!([a.attribute_name(), a.attribute_type().as_str()]))
        .collect();
    attributes.sort_by_key(Value::to_string);
    let indexes: Vec<Value> = description
        .global_secondary_indexes()
        .iter()
        .map(|index| {
            json!({
                "name": index.index_name(),
                "keys": key_schema(index.key_schema()),
                "projection": index
                    .projection()
                    .and_then(|p| p.projection_type())
                    .map(|p| p.as_str().to_owned()),
            })
        })
        .collect();
    json!({
        "keys": key_schema(description.key_schema()),
        "attributes": attributes,
        "indexes": indexes,
        "billing": description
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str().to_owned()),
    })
}

/// `value` with every `Fn::If` replaced by the branch its condition picks
/// (`conditions`: the value of each condition the test sets).
fn resolve_if(value: &Value, conditions: &[(&str, bool)]) -> Value {
    match value {
        Value::Object(map) if map.len() == 1 && map.contains_key("Fn::If") => {
            let branches = map["Fn::If"].as_array().expect("[condition, then, else]");
            let name = branches[0].as_str().expect("a condition name");
            let (_, holds) = conditions
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("the test sets no value for condition {name}"));
            resolve_if(&branches[if *holds { 1 } else { 2 }], conditions)
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), resolve_if(v, conditions)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve_if(item, conditions))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The same shape read from the template's table resource.
fn template_table_shape(table: &Value) -> Value {
    let properties = &table["Properties"];
    let key_schema = |schema: &Value| {
        schema
            .as_array()
            .expect("a KeySchema list")
            .iter()
            .map(|k| json!([k["AttributeName"], k["KeyType"]]))
            .collect::<Vec<_>>()
    };
    let mut attributes: Vec<Value> = properties["AttributeDefinitions"]
        .as_array()
        .expect("AttributeDefinitions")
        .iter()
        .map(|a| json!([a["AttributeName"], a["AttributeType"]]))
        .collect();
    attributes.sort_by_key(Value::to_string);
    let indexes: Vec<Value> = properties["GlobalSecondaryIndexes"]
        .as_array()
        .expect("GlobalSecondaryIndexes")
        .iter()
        .map(|index| {
            json!({
                "name": index["IndexName"],
                "keys": key_schema(&index["KeySchema"]),
                "projection": index["Projection"]["ProjectionType"],
            })
        })
        .collect();
    json!({
        "keys": key_schema(&properties["KeySchema"]),
        "attributes": attributes,
        "indexes": indexes,
        "billing": properties["BillingMode"],
    })
}

/// A moto server of the test's own (CloudFormation and DynamoDB), killed
/// when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let program = find_moto_server();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, endpoint }
    }

    /// One CloudFormation Query API call (moto checks no signature; the
    /// credential scope picks the region).
    async fn cloudformation(&self, params: &[(&str, &str)]) -> String {
        let scope = format!("Credential=local/20260101/{REGION}/cloudformation/aws4_request");
        let mut form: Vec<(&str, &str)> = vec![("Version", "2010-05-15")];
        form.extend_from_slice(params);
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = reqwest::Client::new()
            .post(format!("{}/", self.endpoint))
            .header(
                "Authorization",
                format!("AWS4-HMAC-SHA256 {scope}, SignedHeaders=host, Signature=0"),
            )
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("CloudFormation call");
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(
            status.is_success(),
            "CloudFormation {params:?}: {status} {text}"
        );
        text
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_moto_server() -> PathBuf {
    let local =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/python-tools/bin/moto_server");
    if local.exists() {
        return local;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("moto_server"))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "moto_server not found: the template test deploys into moto's CloudFormation \
                 server. Run scripts/python-tools (scripts/test does), or pip install \
                 'moto[server]' (tests/python-requirements.txt pins it)"
            )
        })
}

/// The text of `<tag>…</tag>` after `after` in an XML answer.
fn xml_after(xml: &str, after: &str, tag: &str) -> String {
    let rest = &xml[xml
        .find(after)
        .unwrap_or_else(|| panic!("{after} in {xml}"))..];
    let open = format!("<{tag}>");
    let start = rest
        .find(&open)
        .unwrap_or_else(|| panic!("{open} in {rest}"))
        + open.len();
    let end = rest[start..].find(&format!("</{tag}>")).unwrap() + start;
    rest[start..end].to_owned()
}

/// The function's environment from the template's Globals, with
/// `!Ref ConnectionsTable` resolved to the deployed table's name. The
/// Cognito variables come from parameters or the first-try pool, which the
/// test supplies itself.
fn function_environment(template: &Value, table_name: &str) -> Vec<(String, String)> {
    let variables = template["Globals"]["Function"]["Environment"]["Variables"]
        .as_object()
        .expect("Globals.Function.Environment.Variables");
    let mut env = Vec::new();
    for (name, value) in variables {
        let value = match value {
            Value::String(s) => s.clone(),
            v if v == &json!({ "Ref": "ConnectionsTable" }) => table_name.to_owned(),
            _ if name.starts_with("COGNITO_") => continue,
            other => panic!("{name}: a value the test does not resolve: {other}"),
        };
        env.push((name.clone(), value));
    }
    env
}

/// `gitgazer-ws handle-event -` with this environment: the proxy response.
fn handle_event(env: &[(String, String)], event: &Value) -> Value {
    let mut child = Command::new(binary_path())
        .args(["--no-cache", "handle-event", "-"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("GITGAZER_WS_CACHE_DIR", test_cache_dir())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gitgazer-ws handle-event");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(event.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "handle-event failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "handle-event printed no JSON: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_table_is_the_one_the_code_makes_and_serves_connections() {
    let template = template();
    let resources = &template["Resources"];
    let table_resource = &resources["ConnectionsTable"];
    assert_eq!(table_resource["Type"], "AWS::DynamoDB::Table");
    // The table as deployed by default, and with the `sub` index.
    let conditions = |sub_index| {
        [
            ("WithPointInTimeRecovery", true),
            ("WithSubIndex", sub_index),
        ]
    };
    let table = &resolve_if(table_resource, &conditions(false));
    let table_with_sub_index = resolve_if(table_resource, &conditions(true));

    // The environment names the template's GSI, and the table's TTL is on
    // the attribute the code writes.
    let env_index = &template["Globals"]["Function"]["Environment"]["Variables"]["DYNAMODB_TABLE_CONNECTIONS_CONNECTION_ID_INDEX"];
    let template_indexes = table["Properties"]["GlobalSecondaryIndexes"]
        .as_array()
        .expect("GlobalSecondaryIndexes");
    assert_eq!(template_indexes.len(), 1, "{template_indexes:?}");
    assert_eq!(
        env_index, &template_indexes[0]["IndexName"],
        "the function's DYNAMODB_TABLE_CONNECTIONS_CONNECTION_ID_INDEX is not the table's GSI"
    );

    let moto = Moto::start();
    let base_env = |table: &str| dynamodb_env(&moto.endpoint, table);

    // What `table create` makes, on the same server (also with the index).
    let table_create = |name: &str, args: &[&str]| {
        let output = Command::new(binary_path())
            .args(["table", "create"])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(base_env(name))
            .output()
            .expect("running gitgazer-ws table create");
        assert!(
            output.status.success(),
            "table create: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let reference = format!("reference-{}", unix_now());
    table_create(&reference, &[]);
    let reference_with_sub_index = format!("reference-sub-{}", unix_now());
    table_create(&reference_with_sub_index, &["--with-sub-index"]);
    let ttl = client(&moto.endpoint)
        .describe_time_to_live()
        .table_name(&reference)
        .send()
        .await
        .unwrap()
        .time_to_live_description
        .expect("a TTL description");
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(
        table["Properties"]["TimeToLiveSpecification"],
        json!({ "AttributeName": ttl.attribute_name().unwrap(), "Enabled": true }),
        "the template's TTL is not the one table create enables"
    );
    let expected = table_shape(&moto.endpoint, &reference).await;
    assert_eq!(
        template_table_shape(table),
        expected,
        "deploy/template.yaml's ConnectionsTable differs from what `gitgazer-ws table create` makes"
    );
    let expected_with_sub_index = table_shape(&moto.endpoint, &reference_with_sub_index).await;
    assert_eq!(
        template_table_shape(&table_with_sub_index),
        expected_with_sub_index,
        "with SubIndex, the template's table differs from `table create --with-sub-index`'s"
    );
    assert_ne!(expected, expected_with_sub_index);

    // The template's table resource, deployed by CloudFormation (moto),
    // with the `sub` index.
    let mut stack = Map::new();
    stack.insert("AWSTemplateFormatVersion".into(), json!("2010-09-09"));
    for (section, names) in [
        ("Parameters", ["PointInTimeRecovery", "SubIndex"]),
        ("Conditions", ["WithPointInTimeRecovery", "WithSubIndex"]),
    ] {
        let picked: Map<String, Value> = names
            .iter()
            .map(|n| ((*n).to_owned(), template[section][n].clone()))
            .collect();
        stack.insert(section.into(), Value::Object(picked));
    }
    stack.insert(
        "Resources".into(),
        json!({ "ConnectionsTable": table_resource.clone() }),
    );
    stack.insert(
        "Outputs".into(),
        json!({
            "TableName": { "Value": { "Ref": "ConnectionsTable" } },
            "TableArn": { "Value": { "Fn::GetAtt": ["ConnectionsTable", "Arn"] } },
        }),
    );
    let body = Value::Object(stack).to_string();
    moto.cloudformation(&[
        ("Action", "CreateStack"),
        ("StackName", "gitgazer-ws"),
        ("TemplateBody", &body),
        ("Parameters.member.1.ParameterKey", "PointInTimeRecovery"),
        ("Parameters.member.1.ParameterValue", "true"),
        ("Parameters.member.2.ParameterKey", "SubIndex"),
        ("Parameters.member.2.ParameterValue", "true"),
    ])
    .await;
    let described = moto
        .cloudformation(&[("Action", "DescribeStacks"), ("StackName", "gitgazer-ws")])
        .await;
    assert_eq!(
        xml_after(&described, "<StackName>gitgazer-ws", "StackStatus"),
        "CREATE_COMPLETE"
    );
    let table_name = xml_after(&described, "<OutputKey>TableName<", "OutputValue");
    let table_arn = xml_after(&described, "<OutputKey>TableArn<", "OutputValue");
    assert_eq!(
        table_shape(&moto.endpoint, &table_name).await,
        expected_with_sub_index,
        "the deployed table differs from what `gitgazer-ws table create --with-sub-index` makes"
    );

    // The real binary with the function's environment on that table.
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let token = crate::lambda::cognito_token_for(&signer, REGION, POOL, CLIENT);
    let cognito = [
        ("COGNITO_USER_POOL_ID", POOL),
        ("COGNITO_CLIENT_ID", CLIENT),
        ("COGNITO_JWKS_URL", jwks.url.as_str()),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let mut ours: Vec<(String, String)> = base_env(&table_name)
        .into_iter()
        .filter(|(k, _)| k != "TABLE_NAME")
        .collect();
    ours.extend(function_environment(&template, &table_name));
    ours.extend(cognito.clone());
    assert!(ours.iter().any(|(k, _)| k == "TABLE_NAME"), "{ours:?}");

    // GitGazer's names: the table by ARN, the index under its variable.
    let index_name = env_index.as_str().unwrap();
    let mut gitgazers: Vec<(String, String)> = base_env(&table_name)
        .into_iter()
        .filter(|(k, _)| k != "TABLE_NAME")
        .collect();
    gitgazers.extend(
        [
            ("DYNAMO_DB_CONNECTIONS_TABLE_ARN", table_arn.as_str()),
            (
                "DYNAMO_DB_TABLE_CONNECTIONS_CONNECTION_ID_INDEX",
                index_name,
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    gitgazers.extend(cognito);

    for (names, env, connection) in [
        ("the template's", &ours, "tmpl-1="),
        ("GitGazer's", &gitgazers, "tmpl-2="),
    ] {
        let connected = handle_event(env, &crate::lambda::connect_event(Some(&token), connection));
        assert_eq!(
            connected,
            json!({ "statusCode": 200, "body": "Connected." }),
            "CONNECT with {names} variables"
        );
        let stored = keys(&scan(&moto.endpoint, &table_name).await);
        let expected: BTreeSet<(String, String)> = ["acme", "globex"]
            .iter()
            .map(|g| ((*g).to_owned(), connection.to_owned()))
            .collect();
        assert_eq!(
            stored, expected,
            "records after CONNECT with {names} variables"
        );
        let disconnected = handle_event(env, &crate::lambda::disconnect_event(connection));
        assert_eq!(
            disconnected,
            json!({ "statusCode": 200, "body": "Disconnected. Removed 2 records." }),
            "DISCONNECT with {names} variables"
        );
        assert!(scan(&moto.endpoint, &table_name).await.is_empty());
    }
}
