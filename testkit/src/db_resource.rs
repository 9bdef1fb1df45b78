//! A database server registered as a resource, the way an operator would: the resource, its
//! admin account as the reset settings' admin, and the accounts to rotate.

/// Registers `(name, resource type, url)`: `admin` (login, password) as its admin account,
/// each of `logins` as an account with `password`. Returns (resource id, admin account id,
/// [(account id, login)]).
pub async fn register(
    api: &crate::Api,
    token: &str,
    (name, resource_type, url): (&str, &str, &str),
    admin: (&str, &str),
    logins: &[&str],
    password: &str,
) -> (String, String, Vec<(String, String)>) {
    let r = api
        .post(
            "/v1/resources",
            token,
            serde_json::json!({"name": name, "resource_type": resource_type, "url": url}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let rid = r.json()["id"].as_str().unwrap().to_string();
    let add = |login: String, pw: String| {
        let path = format!("/v1/resources/{rid}/accounts");
        async move {
            let r = api
                .post(
                    &path,
                    token,
                    serde_json::json!({"login_name": login, "password": pw}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.json()["id"].as_str().unwrap().to_string()
        }
    };
    let admin_id = add(admin.0.into(), admin.1.into()).await;
    let r = api
        .call(
            "PUT",
            &format!("/v1/resources/{rid}/reset-settings"),
            Some(token),
            Some(serde_json::json!({"admin_account_id": admin_id})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut accounts = Vec::new();
    for login in logins {
        let id = add(login.to_string(), password.to_string()).await;
        accounts.push((id, login.to_string()));
    }
    (rid, admin_id, accounts)
}
