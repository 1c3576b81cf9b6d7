function res = hcModelTrace(prob, m, method, seed)
    % HCMODELTRACE  Randomized trace of the Hessian from M products computed in MATLAB (internal).
    %   RES = HCMODELTRACE(PROB, M, METHOD, SEED): RES.trace, RES.stderr, RES.num_matvecs. Rademacher
    %   probes z (entries +-1), for which E[z' H z] = trace(H):
    %     'hutchinson'  the mean of M samples z' H z; stderr std / sqrt(M)
    %     'hutch++'     (Meyer et al. 2021; default) floor(M/3) probes S, Q = orth(H S), the exact
    %                   trace(Q' H Q), plus Hutchinson on the rest projected off Q; unbiased, and exact
    %                   (stderr 0) once the sketch spans the range of H
    %   as the Python side (hessian_core.spectral.trace) does. SEED ([] for the current random stream)
    %   seeds MATLAB's generator for the probes; the caller's generator state is restored afterwards.
    method = lower(char(method));
    if strcmp(method, 'hutchinson')
        least = 1;
    elseif strcmp(method, 'hutch++')
        least = 3;
    else
        error('hessiancore:invalidOption', ['dlhessianTrace: the MATLAB backend implements the methods ', ...
                                            '''hutch++'' and ''hutchinson''; got ''%s'''], method);
    end
    if m < least
        error('hessiancore:invalidOption', 'dlhessianTrace: %s needs NumMatvecs >= %d, got %d', method, least, m);
    end
    if ~isempty(seed)
        previous = rng();
        restore = onCleanup(@() rng(previous));
        rng(seed, 'twister');
    end
    P = prob.P;
    probes = @(n) 2 * double(rand(P, n) < 0.5) - 1;
    if strcmp(method, 'hutchinson')
        Z = probes(m);
        samples = sum(Z .* hcModelHvp(prob, Z), 1);
        res = struct('trace', mean(samples), 'stderr', stderrOf(samples), 'num_matvecs', m);
        return
    end
    s = floor(m / 3);
    [Q, ~] = qr(hcModelHvp(prob, probes(s)), 0);
    Q = Q(:, 1:min(s, P));
    exact = sum(sum(Q .* hcModelHvp(prob, Q)));
    used = s + size(Q, 2);
    rest = m - used;
    if rest <= 0
        res = struct('trace', exact, 'stderr', 0, 'num_matvecs', used);
        return
    end
    G = probes(rest);
    G = G - Q * (Q' * G);
    samples = sum(G .* hcModelHvp(prob, G), 1);
    res = struct('trace', exact + mean(samples), 'stderr', stderrOf(samples), 'num_matvecs', used + rest);
end

function se = stderrOf(samples)
    if numel(samples) > 1
        se = std(samples) / sqrt(numel(samples));
    else
        se = Inf;
    end
end
