function res = hcModelEigs(prob, k, which)
    % HCMODELEIGS  K eigenpairs of the Hessian from products computed in MATLAB (internal).
    %   RES = HCMODELEIGS(PROB, K, WHICH) with WHICH 'LA' (largest), 'SA' (smallest), 'LM' (largest
    %   magnitude) or 'BE' (floor(K/2) smallest and the rest largest) returns RES.values (K x 1,
    %   ascending), RES.vectors (P x K, unit norm, dlhessian's order) and RES.residuals (K x 1):
    %   ||H v - lambda v||, recomputed with K further products, not estimated. MATLAB's eigs on a
    %   function handle (symmetric: opts.issym) does the work (eigs page: d = eigs(Afun, n, k, sigma, opts));
    %   a small Hessian (P <= max(20, 2K + 2)) is formed and eig'ed instead, as ARPACK needs K < P.
    %   Unconverged eigenvalues give a 'hessiancore:notConverged' warning; the residuals say how far.
    P = prob.P;
    if k > P
        error('hessiancore:invalidInput', 'dlhessianEigs: K = %d exceeds the number of learnables P = %d', k, P);
    end
    if P <= max(20, 2 * k + 2)
        H = hcModelDense(prob, 'hessian');
        [U, L] = eig((H + H') / 2);
        [w, order] = sort(diag(L), 'ascend');
        U = U(:, order);
        switch which
            case 'LA'
                pick = P - k + 1:P;
            case 'SA'
                pick = 1:k;
            case 'LM'
                [~, byMagnitude] = sort(abs(w), 'descend');
                pick = byMagnitude(1:k);
            otherwise
                low = floor(k / 2);
                pick = [1:low, P - (k - low) + 1:P];
        end
        values = w(pick);
        vectors = U(:, pick);
    else
        names = struct('LA', {{'largestreal', 'la'}}, 'SA', {{'smallestreal', 'sa'}}, ...
                       'LM', {{'largestabs', 'lm'}}, 'BE', {{'bothendsreal', 'be'}});
        sigma = names.(which){1};
        if hcIsOctave()
            sigma = names.(which){2};   % Octave 7's eigs knows only the short names
        end
        opts = struct('issym', true, 'tol', 1e-10, 'maxit', 300, 'p', min(P, max(2 * k + 1, 20)), ...
                      'v0', sin(0.7 * (1:P)' + 0.3));
        [vectors, D, flag] = eigs(@(v) hcModelHvp(prob, v), P, k, sigma, opts);
        values = diag(D);
        if flag ~= 0
            warning('hessiancore:notConverged', ['dlhessianEigs: eigs reports that not all %d eigenvalues ', ...
                                                 'converged; see the residuals'], k);
        end
    end
    vectors = vectors ./ sqrt(sum(vectors.^2, 1));
    [values, order] = sort(values(:), 'ascend');
    vectors = vectors(:, order);
    R = hcModelHvp(prob, vectors) - vectors .* values';
    res = struct('values', values, 'vectors', vectors, 'residuals', sqrt(sum(R.^2, 1))');
end
